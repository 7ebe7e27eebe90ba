"""Changes applied to a model from outside, the torchtitan way: the model's own code stays single-device and
free of training concerns, and parameter names (so checkpoints) do not change.

* activation checkpointing: each unit the model declares (``fsdp_units()``: its transformer layers) keeps
  only its input during the forward and recomputes its activations during the backward;
* ``torch.compile`` of the whole model.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


def apply_activation_checkpointing(model: nn.Module) -> nn.Module:
    """Checkpoint every unit in ``model.fsdp_units()`` (see :class:`specs.ParallelizableModel`); returns ``model``."""
    units = getattr(model, "fsdp_units", None)
    if not callable(units):
        raise TypeError(f"{type(model).__name__} declares no fsdp_units(); nothing to checkpoint (specs.ParallelizableModel)")
    for unit in units():
        if getattr(unit, "_lmplanes_checkpointed", False):
            continue
        unit.forward = functools.partial(_checkpointed, unit.forward)
        unit._lmplanes_checkpointed = True
    return model


def _checkpointed(forward: Callable[..., torch.Tensor], *args: Any, **kwargs: Any) -> torch.Tensor:
    if not torch.is_grad_enabled():
        return forward(*args, **kwargs)  # nothing to save for a backward: run plainly
    return checkpoint(forward, *args, use_reentrant=False, **kwargs)


def compile_model(model: nn.Module) -> nn.Module:
    """``torch.compile`` of the model's forward, in place (``nn.Module.compile``): the module, its parameter
    names and its checkpoints stay the same object and names.

    On the CPU, embedding lookups stay outside the compiled graph: Inductor turns an embedding's backward into a
    scatter-add with atomic updates, which there is about ten times slower than PyTorch's own sort-based kernel
    (shakespeare-char: 1 ms of a 19 ms step; BENCHMARKS.md). Two graph breaks cost far less.
    """
    if next(model.parameters()).device.type == "cpu":
        for module in model.modules():
            if isinstance(module, nn.Embedding):
                module.forward = torch.compiler.disable(module.forward, recursive=False)  # type: ignore[method-assign]
    model.compile()
    return model
