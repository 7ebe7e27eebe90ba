"""What a run reports: ``metrics.jsonl`` (one JSON object per logged step), the same as CSV, TensorBoard
event files (when the ``tensorboard`` package is installed), and a PNG of the loss curves."""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from pathlib import Path
from typing import Any

from specs.config_files import atomic_write_text

log = logging.getLogger(__name__)

JSONL, CSV, PLOT, TENSORBOARD = "metrics.jsonl", "metrics.csv", "loss.png", "tensorboard"
COLUMNS = ("step", "train_loss", "val_loss", "val_perplexity", "lr", "step_ms", "tokens_per_s", "mfu", "grad_norm")


class MetricsLog:
    """Appends rows to the run's metric files. On resume, rows after the resumed step are dropped first, so the
    files hold each step once, as the run that continued logged it."""

    def __init__(self, root: Path, *, resume_after: int | None = None) -> None:
        self.root = root
        self.rows: list[dict[str, Any]] = []
        if resume_after is not None:
            self.rows = [row for row in _read_jsonl(root / JSONL) if row["step"] <= resume_after]
            atomic_write_text(root / JSONL, "".join(json.dumps(row) + "\n" for row in self.rows))
            atomic_write_text(root / CSV, _csv_text(self.rows, header=True))
        elif not (root / CSV).exists():
            atomic_write_text(root / CSV, _csv_text([], header=True))
        self._tb = _tensorboard_writer(root / TENSORBOARD, purge_step=None if resume_after is None else resume_after + 1)
        # Kept open and line-buffered: each row reaches the file when it is logged, without an open per step.
        self._jsonl = open(root / JSONL, "a", encoding="utf-8", buffering=1)  # noqa: SIM115  (closed in close())
        self._csv = open(root / CSV, "a", encoding="utf-8", newline="", buffering=1)  # noqa: SIM115

    def log(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        self._jsonl.write(json.dumps(row) + "\n")
        self._csv.write(_csv_text([row], header=False))
        if self._tb is not None:
            for key, value in row.items():
                if key != "step" and isinstance(value, (int, float)) and math.isfinite(value):
                    self._tb.add_scalar(key, value, row["step"])

    def plot(self) -> Path | None:
        """Train and validation loss against step, as ``loss.png``; None when matplotlib is missing."""
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:  # a declared dependency; only a broken install lacks it
            log.warning("matplotlib cannot be imported: no loss plot")
            return None
        train = [(r["step"], r["train_loss"]) for r in self.rows if r.get("train_loss") is not None]
        val = [(r["step"], r["val_loss"]) for r in self.rows if r.get("val_loss") is not None]
        fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
        if train:
            ax.plot(*zip(*train), label="train", linewidth=1, alpha=0.8)
        if val:
            ax.plot(*zip(*val), label="validation", marker="o", linewidth=1.5)
        ax.set(xlabel="step", ylabel="loss (nats/token)", title="loss")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = self.root / PLOT
        fig.savefig(path)
        plt.close(fig)
        return path

    def close(self) -> None:
        self._jsonl.close()
        self._csv.close()
        if self._tb is not None:
            self._tb.close()


class NoMetrics:
    """What ranks other than 0 log: nothing (rank 0 writes the run's metrics)."""

    def log(self, row: dict[str, Any]) -> None:
        pass

    def plot(self) -> Path | None:
        return None

    def close(self) -> None:
        pass


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a line cut short by a crash: everything before it stands
    return rows


def _csv_text(rows: list[dict[str, Any]], *, header: bool) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    if header:
        writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def _tensorboard_writer(folder: Path, purge_step: int | None) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.info("tensorboard is not installed: no TensorBoard events (pip install tensorboard)")
        return None
    return SummaryWriter(str(folder), purge_step=purge_step)
