"""lmplanes training: a Trainer over any :class:`specs.CausalLM`, with AdamW, learning-rate schedules, gradient
accumulation and clipping, mixed precision, evaluation, checkpoints that resume exactly, and metrics.

Models are built, saved and loaded through a :class:`specs.ModelStore` the caller hands over (``model.STORE``
from ``pack`` or ``examples``): this plane never imports model code. Activation checkpointing and
``torch.compile`` are applied to the model from outside (``train.wrappers``).

The names below load on first use, so that ``lmplanes`` builds its command line (``train.cli``) without
importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from train.loss import chunked_cross_entropy, lm_loss
    from train.optim import build_optimizer, parameter_groups
    from train.schedule import lr_at
    from train.trainer import RunResult, Trainer, TrainingDiverged
    from train.wrappers import apply_activation_checkpointing, compile_model

_MODULES = {
    "RunResult": "train.trainer",
    "Trainer": "train.trainer",
    "TrainingDiverged": "train.trainer",
    "apply_activation_checkpointing": "train.wrappers",
    "build_optimizer": "train.optim",
    "chunked_cross_entropy": "train.loss",
    "compile_model": "train.wrappers",
    "lm_loss": "train.loss",
    "lr_at": "train.schedule",
    "parameter_groups": "train.optim",
}
__all__ = [
    "RunResult",
    "Trainer",
    "TrainingDiverged",
    "apply_activation_checkpointing",
    "build_optimizer",
    "chunked_cross_entropy",
    "compile_model",
    "lm_loss",
    "lr_at",
    "parameter_groups",
]


def __getattr__(name: str) -> Any:
    if name not in _MODULES:
        raise AttributeError(f"module 'train' has no attribute {name!r}")
    value = getattr(importlib.import_module(_MODULES[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value
