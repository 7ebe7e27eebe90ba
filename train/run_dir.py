"""A run directory: the resolved config, the metrics, and the checkpoints, with the latest one named.

    DIR/train_config.yaml              the complete config of the run (what --resume reads)
    DIR/metrics.jsonl, metrics.csv     one row per logged step;  DIR/tensorboard/  event files
    DIR/loss.png                       train and validation loss curves
    DIR/checkpoints/step-00000250/     a checkpoint with train_state/ (the newest keep_last are kept)
    DIR/checkpoints/best/              the checkpoint with the lowest validation loss (weights and card)
    DIR/checkpoints/LATEST             the name of the newest step checkpoint, written after it is complete

Every checkpoint is published atomically by the model store, and ``LATEST`` is replaced atomically after it,
so a crash at any point leaves the previous latest checkpoint intact and named.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path

from specs.config_files import atomic_write_text, dump_config, load_config
from specs.manifest import verify_manifest
from specs.protocols import ModelStore
from specs.train_config import TrainConfig

log = logging.getLogger(__name__)

CONFIG_NAME = "train_config.yaml"
CHECKPOINTS = "checkpoints"
LATEST = "LATEST"
BEST = "best"
_STEP = re.compile(r"step-(\d{8})")


class RunDir:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.checkpoints = self.root / CHECKPOINTS

    # ------------------------------------------------------------------------------------------------ config

    def start(self, cfg: TrainConfig) -> None:
        """A new run: the directory must be missing or empty (a run is never started over another one)."""
        if self.root.exists() and (not self.root.is_dir() or any(self.root.iterdir())):
            what = "a file" if not self.root.is_dir() else "not empty"
            hint = f"; to continue that run: lmplanes train --resume {self.root}" if (self.root / CONFIG_NAME).is_file() else ""
            raise FileExistsError(f"{self.root} is {what}: a run needs a new or empty directory{hint}")
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        dump_config(cfg, self.root / CONFIG_NAME)

    def config(self) -> TrainConfig:
        path = self.root / CONFIG_NAME
        if not path.is_file():
            raise FileNotFoundError(f"{self.root} is not a training run directory (no {CONFIG_NAME})")
        cfg = load_config(path, kind="train")
        assert isinstance(cfg, TrainConfig)
        return cfg

    def save_config(self, cfg: TrainConfig) -> None:
        dump_config(cfg, self.root / CONFIG_NAME)

    # ------------------------------------------------------------------------------------------- checkpoints

    def step_dir(self, step: int) -> Path:
        return self.checkpoints / f"step-{step:08d}"

    def mark_latest(self, step: int) -> None:
        atomic_write_text(self.checkpoints / LATEST, self.step_dir(step).name + "\n")

    def latest(self, store: ModelStore) -> Path | None:
        """The checkpoint to resume from: the one ``LATEST`` names when it verifies, else the newest step
        checkpoint that does (a damaged one is reported and passed over); None before the first checkpoint."""
        named = self.checkpoints / LATEST
        candidates = sorted(self._step_dirs(), reverse=True)
        if named.is_file():
            first = self.checkpoints / named.read_text(encoding="utf-8").strip()
            candidates = [first, *(c for c in candidates if c != first)]
        for candidate in candidates:
            problems = checkpoint_problems(candidate, store)
            if not problems:
                return candidate
            log.warning("skipping checkpoint %s: %s", candidate, "; ".join(problems))
        return None

    def prune(self, keep_last: int) -> list[Path]:
        """Remove step checkpoints beyond the newest ``keep_last`` (never the one ``LATEST`` names)."""
        named = self.checkpoints / LATEST
        protected = named.read_text(encoding="utf-8").strip() if named.is_file() else None
        removed = []
        for old in sorted(self._step_dirs(), reverse=True)[keep_last:]:
            if old.name != protected:
                shutil.rmtree(old)
                removed.append(old)
        return removed

    @property
    def best(self) -> Path:
        return self.checkpoints / BEST

    def _step_dirs(self) -> list[Path]:
        if not self.checkpoints.is_dir():
            return []
        return [p for p in self.checkpoints.iterdir() if p.is_dir() and _STEP.fullmatch(p.name)]


def checkpoint_problems(path: Path, store: ModelStore) -> list[str]:
    """One line per problem with a checkpoint, single-file (the model store checks it) or sharded (the
    manifest, which lists every shard and is written last)."""
    if (path / "dcp").is_dir():
        problems = verify_manifest(path)
        if not problems and not (path / "dcp" / ".metadata").is_file():
            problems = ["dcp/.metadata: missing"]
        return problems
    return store.verify(path)
