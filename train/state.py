"""``train_state/`` inside a checkpoint: everything besides the weights that an exact resume needs.

    train_state/state.json     step, data cursor, best validation loss, Python's RNG state
    train_state/optimizer.pt   the optimizer's state dict (tensors and numbers only); absent from a sharded
                               checkpoint, whose optimizer state is in dcp/ (see train.sharded)
    train_state/rng.pt         PyTorch's CPU and CUDA generator states (dropout draws)

The ``.pt`` files hold plain tensors and numbers, written with ``torch.save`` and read with
``torch.load(weights_only=True)``: no pickled objects.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from specs.config_files import atomic_write_text
from specs.errors import CheckpointError

STATE_DIR = "train_state"
FORMAT = "lmplanes-train-state"
VERSION = 1


@dataclass(frozen=True, slots=True)
class TrainState:
    step: int  # optimizer steps completed
    data: dict[str, Any]  # the training stream's cursor
    best_val_loss: float | None
    optimizer: dict[str, Any] | None  # None: held in the checkpoint's sharded dcp/ instead
    torch_rng: torch.Tensor
    cuda_rng: list[torch.Tensor]
    python_rng: Any


def capture(
    step: int, data: dict[str, Any], best_val_loss: float | None, optimizer: torch.optim.Optimizer | None
) -> TrainState:
    """The state now (the optimizer's tensors are referenced, not copied: write it before the next step;
    ``optimizer`` None: it is saved sharded, apart from this)."""
    cuda = [torch.cuda.get_rng_state(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    saved = None if optimizer is None else optimizer.state_dict()
    return TrainState(step, data, best_val_loss, saved, torch.get_rng_state(), cuda, random.getstate())


def write(state: TrainState, checkpoint_dir: Path) -> None:
    folder = checkpoint_dir / STATE_DIR
    folder.mkdir()
    if state.optimizer is not None:
        torch.save(state.optimizer, folder / "optimizer.pt")
    torch.save({"torch": state.torch_rng, "cuda": state.cuda_rng}, folder / "rng.pt")
    version, internal, gauss = state.python_rng
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "step": state.step,
        "data": state.data,
        "best_val_loss": state.best_val_loss,
        "optimizer": "optimizer.pt" if state.optimizer is not None else "dcp",
        "python_rng": [version, list(internal), gauss],
    }
    atomic_write_text(folder / "state.json", json.dumps(meta, indent=2) + "\n")


def read(checkpoint_dir: Path) -> TrainState:
    folder = checkpoint_dir / STATE_DIR
    try:
        meta = json.loads((folder / "state.json").read_text(encoding="utf-8"))
        in_file = meta.get("optimizer", "optimizer.pt") == "optimizer.pt"  # older states name no place: the file
        optimizer = torch.load(folder / "optimizer.pt", weights_only=True, map_location="cpu") if in_file else None
        rng = torch.load(folder / "rng.pt", weights_only=True, map_location="cpu")
    except FileNotFoundError as exc:
        raise CheckpointError(f"{STATE_DIR}/{Path(exc.filename).name}: missing; this checkpoint cannot resume a run",
                              checkpoint_dir) from None
    except (OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{STATE_DIR}: unreadable ({exc})", checkpoint_dir) from None
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise CheckpointError(f"{STATE_DIR}/state.json: not a {FORMAT} v{VERSION} file", checkpoint_dir)
    version, internal, gauss = meta["python_rng"]
    return TrainState(
        step=meta["step"],
        data=meta["data"],
        best_val_loss=meta["best_val_loss"],
        optimizer=optimizer,
        torch_rng=rng["torch"],
        cuda_rng=rng["cuda"],
        python_rng=(version, tuple(internal), gauss),
    )


def restore_rng(state: TrainState) -> None:
    torch.set_rng_state(state.torch_rng)
    if state.cuda_rng and torch.cuda.is_available():
        for i, rng in enumerate(state.cuda_rng[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(rng, i)
    random.setstate(state.python_rng)
