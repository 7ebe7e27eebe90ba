"""The processes of a run: who this one is, the process group, and the few collectives the trainer needs.

A run on several processes is started by ``torchrun`` (or ``lmplanes train --nproc N``, which starts it), which
sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` in each process. Without any of
them the run is one process. A strategy that needs a process group (``ddp``, ``fsdp2``) run as one process gets
a group of one (an in-memory store, no network), so a one-process run writes the same sharded checkpoints as a
many-process one. The backend is NCCL on CUDA and gloo on the CPU unless the config names one.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from specs.train_config import ParallelConfig

_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


class DistributedSetupError(ValueError):
    """The environment describes a multi-process run incompletely, or the config cannot run on it."""


@dataclass(frozen=True, slots=True)
class World:
    rank: int
    world_size: int
    local_rank: int
    group: bool  # whether this process is in a process group (collectives run)
    owns_group: bool = False  # whether it joined the group here (and leaves it in close())

    @property
    def main(self) -> bool:
        """The process that logs, shows progress, writes metrics and publishes checkpoints."""
        return self.rank == 0

    def barrier(self) -> None:
        if self.group:
            dist.barrier()

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """The mean of a scalar over the ranks (itself on one process)."""
        if not self.group or self.world_size == 1:
            return value
        value = value.detach().clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        return value / self.world_size

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank (a picklable object: a path, a number)."""
        if not self.group or self.world_size == 1:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def launched_world(environ: Mapping[str, str] | None = None) -> tuple[int, int, int] | None:
    """``(rank, world_size, local_rank)`` from a launcher's variables, None when none is set; a partial set is an
    error that names what is missing."""
    env = os.environ if environ is None else environ
    present = [name for name in _VARIABLES if name in env]
    if not present:
        return None
    missing = [name for name in _VARIABLES if name not in env]
    if missing:
        raise DistributedSetupError(
            f"{', '.join(present)} set but {', '.join(missing)} not: a multi-process run needs all of "
            f"{', '.join(_VARIABLES)} (start it with torchrun or 'lmplanes train --nproc N'), a single-process "
            f"run none of them"
        )
    try:
        rank, world_size, local_rank = (int(env[name]) for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    except ValueError:
        raise DistributedSetupError(
            f"RANK, WORLD_SIZE and LOCAL_RANK must be whole numbers, got {env['RANK']!r}, {env['WORLD_SIZE']!r}, "
            f"{env['LOCAL_RANK']!r}"
        ) from None
    if world_size < 1 or not 0 <= rank < world_size:
        raise DistributedSetupError(f"RANK {rank} is not in [0, WORLD_SIZE={world_size})")
    return rank, world_size, local_rank


def join(cfg: ParallelConfig, device: torch.device) -> World:
    """Join the run's process group (when the strategy needs one) and say who this process is."""
    launched = launched_world()
    if cfg.strategy == "single":
        if launched is not None and launched[1] > 1:
            raise DistributedSetupError(
                f"parallel.strategy is single but {launched[1]} processes were started; set "
                f"parallel.strategy=ddp or fsdp2"
            )
        return World(rank=0, world_size=1, local_rank=0, group=False)
    backend = _backend(cfg, device)
    timeout = datetime.timedelta(minutes=10)
    if dist.is_initialized():  # the caller set the group up itself
        rank, world_size = dist.get_rank(), dist.get_world_size()
        return World(rank=rank, world_size=world_size, local_rank=(launched or (rank, 0, rank))[2], group=True)
    if launched is None:
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1, timeout=timeout)
        return World(rank=0, world_size=1, local_rank=0, group=True, owns_group=True)
    rank, world_size, local_rank = launched
    dist.init_process_group(backend, rank=rank, world_size=world_size, timeout=timeout)
    return World(rank=rank, world_size=world_size, local_rank=local_rank, group=True, owns_group=True)


def local_device(device: torch.device, world: World) -> torch.device:
    """This process's device: on CUDA, the GPU of its local rank (one process per GPU)."""
    if device.type == "cuda" and world.world_size > 1:
        torch.cuda.set_device(world.local_rank)
        return torch.device("cuda", world.local_rank)
    return device


def _backend(cfg: ParallelConfig, device: torch.device) -> str:
    if cfg.backend != "auto":
        if cfg.backend == "nccl" and device.type != "cuda":
            raise DistributedSetupError(f"parallel.backend nccl needs CUDA devices; this run is on {device.type}")
        return cfg.backend
    return "nccl" if device.type == "cuda" else "gloo"
