"""Sharded checkpoints with ``torch.distributed.checkpoint`` (DCP), and conversion to and from the single-file one.

A run under ``ddp`` or ``fsdp2`` writes each checkpoint as

    step-00000250/dcp/                 the model's and the optimizer's state, every rank writing its own shards
                                       (``__R_0.distcp``) and rank 0 the ``.metadata`` that maps them
    step-00000250/train_state/         step, data cursor, RNG states (the optimizer is in dcp/)
    step-00000250/config.json          the model config;  train_config.yaml: the run's config (for conversion)
    step-00000250/tokenizer.json       the corpus tokenizer
    step-00000250/MANIFEST.json        every file with its sha256, written last

Keys are fully qualified parameter names (``get_state_dict``), not the shards' layout, so a checkpoint loads
on any number of ranks, under either strategy, or on one process without a process group: DCP reshards on
load. The directory is written under a hidden ``.step-00000250.partial`` name and renamed into place by rank 0
after every rank has finished writing and the manifest is written, so a crash at any point leaves no partial
checkpoint under a checkpoint's name. Because publishing waits for the write to complete, replacing
``dcp.save`` by ``dcp.async_save`` keeps that guarantee as long as the publish waits on its future.

:func:`to_single_file` and :func:`to_sharded` convert between this layout and DESIGN.md's single-file one
(``model.safetensors`` + ``train_state/optimizer.pt``), optimizer state included, through the model store.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
    set_state_dict,
)

from specs.config_files import dump_config, load_config
from specs.errors import CheckpointError
from specs.manifest import write_manifest
from specs.protocols import ModelStore
from specs.train_config import TrainConfig
from train import state as train_state
from train.distributed import World
from train.optim import build_optimizer

DCP_DIR = "dcp"
TRAIN_CONFIG = "train_config.yaml"
_FULL = StateDictOptions(full_state_dict=True)
_ONE = World(rank=0, world_size=1, local_rank=0, group=False)  # conversions run in one process, no group


def is_sharded(checkpoint: Path) -> bool:
    return (Path(checkpoint) / DCP_DIR / ".metadata").is_file()


def save(model: nn.Module, optimizer: torch.optim.Optimizer | None, path: Path, world: World,
         extra: Callable[[Path], None]) -> Path:
    """Write ``model`` (and ``optimizer``) to the sharded checkpoint ``path``, collectively on every rank;
    ``extra(folder)`` (rank 0) adds the other files before the manifest. Returns ``path``."""
    staging = path.parent / f".{path.name}.partial"
    if world.main:
        shutil.rmtree(staging, ignore_errors=True)  # the leftover of a crashed save
        staging.mkdir(parents=True)
    world.barrier()
    with _one_process_quietly():
        dcp.save(_state(model, optimizer), checkpoint_id=staging / DCP_DIR, no_dist=not world.group)
    world.barrier()  # every rank's shards are written
    if world.main:
        extra(staging)
        write_manifest(staging)
        _publish(staging, path)
    world.barrier()
    return path


def load(model: nn.Module, optimizer: torch.optim.Optimizer | None, path: Path, *, distributed: bool) -> None:
    """Read the sharded checkpoint ``path`` into ``model`` (and ``optimizer``), resharded to this run's layout."""
    state = _state(model, optimizer)
    with _one_process_quietly():
        dcp.load(state, checkpoint_id=Path(path) / DCP_DIR, no_dist=not distributed)
    if optimizer is None:
        set_model_state_dict(model, state["model"])
    else:
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])


def full_optimizer_state(model: nn.Module, cfg: TrainConfig, saved: dict[str, Any]) -> dict[str, Any]:
    """A single-file checkpoint's optimizer state (keyed by parameter index) keyed by parameter name instead,
    read through a temporary optimizer over the unwrapped ``model``: the form :func:`set_full_optimizer` takes
    after the model is wrapped."""
    temporary = build_optimizer(model, cfg.optimizer)
    temporary.load_state_dict(saved)
    _, named = get_state_dict(model, temporary, options=_FULL)
    return named


def set_full_optimizer(model: nn.Module, optimizer: torch.optim.Optimizer, named: dict[str, Any]) -> None:
    """Load a name-keyed full optimizer state into the optimizer of a wrapped (DDP or sharded) model."""
    set_optimizer_state_dict(model, optimizer, named, options=_FULL)


def to_single_file(src: str | Path, dst: str | Path, store: ModelStore, *, overwrite: bool = False) -> Path:
    """The sharded checkpoint ``src`` as a single-file checkpoint ``dst`` (weights, and ``train_state/`` with
    the optimizer when ``src`` has one), through a one-process load on the CPU."""
    src = Path(src)
    cfg = _train_config(src)
    model = store.build(cfg.model, device="cpu")
    resumable = (src / train_state.STATE_DIR).is_dir()
    optimizer = build_optimizer(model, cfg.optimizer) if resumable else None
    load(model, optimizer, src, distributed=False)

    def extra(folder: Path) -> None:
        if optimizer is not None:
            saved = train_state.read(src)
            train_state.write(dataclasses.replace(saved, optimizer=optimizer.state_dict()), folder)
        _copy_beside(src, folder)

    return store.save(model, dst, overwrite=overwrite, card_fields={"name": cfg.name or cfg.model.name or None},
                      extra=extra)


def to_sharded(src: str | Path, dst: str | Path, store: ModelStore, cfg: TrainConfig) -> Path:
    """The single-file checkpoint ``src`` (written by a run of ``cfg``) as a sharded checkpoint ``dst``."""
    src, dst = Path(src), Path(dst)
    if dst.exists():
        raise FileExistsError(f"{dst} exists; converting never writes over a directory")
    model = store.load(src, device="cpu")
    resumable = (src / train_state.STATE_DIR).is_dir()
    saved = train_state.read(src) if resumable else None
    optimizer = None
    if saved is not None:
        assert saved.optimizer is not None  # a single-file checkpoint keeps it in train_state/optimizer.pt
        optimizer = build_optimizer(model, cfg.optimizer)
        optimizer.load_state_dict(saved.optimizer)

    snapshot = None if saved is None else dataclasses.replace(saved, optimizer=None)
    return save(model, optimizer, dst, _ONE, sharded_extras(cfg, snapshot, lambda folder: _copy_beside(src, folder)))


def sharded_extras(cfg: TrainConfig, snapshot: train_state.TrainState | None,
                   tokenizer: Callable[[Path], None]) -> Callable[[Path], None]:
    """What a run adds beside the shards: ``train_state/`` (without the optimizer), both configs, the tokenizer."""
    def extra(folder: Path) -> None:
        if snapshot is not None:
            train_state.write(snapshot, folder)
        dump_config(cfg.model, folder / "config.json")
        dump_config(cfg, folder / TRAIN_CONFIG)
        tokenizer(folder)

    return extra


@contextlib.contextmanager
def _one_process_quietly() -> Iterator[None]:
    """DCP warns that it assumes one process when there is no group: that is the intent where it happens."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "torch.distributed is disabled", UserWarning)
        yield


def _state(model: nn.Module, optimizer: torch.optim.Optimizer | None) -> dict[str, Any]:
    if optimizer is None:
        return {"model": get_model_state_dict(model)}
    model_state, optim_state = get_state_dict(model, optimizer)  # initialises a fresh optimizer's states
    return {"model": model_state, "optim": optim_state}


def _train_config(src: Path) -> TrainConfig:
    path = src / TRAIN_CONFIG
    if not is_sharded(src) or not path.is_file():
        raise CheckpointError(f"not a sharded lmplanes checkpoint (no {DCP_DIR}/.metadata or {TRAIN_CONFIG})", src)
    cfg = load_config(path, kind="train")
    assert isinstance(cfg, TrainConfig)
    return cfg


def _copy_beside(src: Path, folder: Path) -> None:
    if (src / "tokenizer.json").is_file():
        shutil.copy2(src / "tokenizer.json", folder / "tokenizer.json")


def _publish(staging: Path, path: Path) -> None:
    """Rename the finished ``staging`` to ``path``; a previous ``path`` (``best/``) is moved aside first and
    removed after, so the name always holds a complete checkpoint or none."""
    old = path.parent / f".{path.name}.old"
    shutil.rmtree(old, ignore_errors=True)
    if path.exists():
        path.rename(old)
    staging.rename(path)
    shutil.rmtree(old, ignore_errors=True)
