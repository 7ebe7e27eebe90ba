"""Data parallelism applied to a model from outside, the torchtitan way: the model's code stays single-device.

* ``ddp``: the model is wrapped in ``DistributedDataParallel`` (every rank holds all of it; gradients are
  averaged in buckets during the backward). The wrapper answers the model's own attributes (``config``,
  ``output_head``), so the loss code takes either.
* ``fsdp2``: ``fully_shard`` on each unit the model declares (``fsdp_units()``: its transformer layers), then on
  the root: parameters become ``DTensor`` shards over the ranks, gathered one unit at a time for its forward
  and backward and freed after, and gradients are reduce-scattered. ``precision: bfloat16`` becomes the
  mixed-precision policy (bfloat16 compute weights, float32 gradient reduction, float32 sharded master weights
  and optimizer states); ``cpu_offload`` keeps the shards, their gradients and the optimizer step on the CPU.

Gradient accumulation averages once per optimizer step, not per micro-batch: :func:`gradient_sync` turns the
reduction off for all micro-batches but the last (``no_sync`` for DDP; ``set_requires_gradient_sync`` for
FSDP2, which then keeps unsharded gradients between micro-batches).
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import CPUOffloadPolicy, FSDPModule, MixedPrecisionPolicy, OffloadPolicy, fully_shard
from torch.nn.parallel import DistributedDataParallel

from specs.train_config import TrainConfig
from train.distributed import DistributedSetupError, World


class DataParallel(DistributedDataParallel):
    """``DistributedDataParallel`` that answers the wrapped model's attributes (``config``, ``output_head``...)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.module, name)


def parallelize(model: nn.Module, cfg: TrainConfig, world: World, device: torch.device) -> nn.Module:
    """The model to train under ``cfg.parallel.strategy``: ``model`` itself (single, fsdp2: sharded in place)
    or a :class:`DataParallel` around it (ddp)."""
    strategy = cfg.parallel.strategy
    if strategy == "single":
        return model
    if strategy == "ddp":
        # The buckets are the gradients (no second copy of them): what specs.train_memory counts.
        return DataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                            gradient_as_bucket_view=True)
    units = getattr(model, "fsdp_units", None)
    if not callable(units):
        raise TypeError(f"{type(model).__name__} declares no fsdp_units() (specs.ParallelizableModel): fsdp2 "
                        f"needs the units to shard")
    if cfg.parallel.cpu_offload and device.type == "cpu":
        raise DistributedSetupError("parallel.cpu_offload moves FSDP2's shards from the GPUs to the CPU; this run "
                                    "is on the CPU already: set parallel.cpu_offload=false")
    mesh = init_device_mesh(device.type, (world.world_size,))
    compute = torch.bfloat16 if cfg.precision == "bfloat16" else None
    options: dict[str, Any] = {
        "mesh": mesh,
        "mp_policy": MixedPrecisionPolicy(param_dtype=compute, reduce_dtype=torch.float32),
        "offload_policy": CPUOffloadPolicy() if cfg.parallel.cpu_offload else OffloadPolicy(),
    }
    for unit in units():
        fully_shard(unit, **options)
    fully_shard(model, **options)
    return model


def gradient_sync(model: nn.Module, sync: bool) -> contextlib.AbstractContextManager:
    """A context for one micro-batch's forward and backward: with ``sync`` False its gradients stay local
    (accumulated), with True this backward averages them over the ranks."""
    if isinstance(model, DistributedDataParallel):
        return contextlib.nullcontext() if sync else model.no_sync()
    if isinstance(model, FSDPModule):
        model.set_requires_gradient_sync(sync)
    return contextlib.nullcontext()
