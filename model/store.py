"""The model plane as a :class:`specs.ModelStore`: how application planes build, save and load models.

``train`` (and later ``serve``, ``eval``) never import the compute spine; the composition roots (``pack``,
``examples``) hand them :data:`STORE`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from model.build import build
from model.checkpoint import load_checkpoint, save_checkpoint, verify_checkpoint
from specs.model_config import ModelConfig


class ModelPlaneStore:
    """Implements :class:`specs.ModelStore` with this plane's builder and checkpoint directories."""

    def build(self, cfg: ModelConfig, *, device: torch.device | str = "cpu") -> nn.Module:
        return build(cfg, device=device)

    def save(
        self,
        model: nn.Module,
        path: str | os.PathLike[str],
        *,
        overwrite: bool = False,
        card_fields: Mapping[str, Any] | None = None,
        extra: Callable[[Path], None] | None = None,
    ) -> Path:
        return save_checkpoint(model, path, overwrite=overwrite, card_fields=card_fields, extra=extra)

    def load(
        self, path: str | os.PathLike[str], *, device: torch.device | str = "cpu", dtype: torch.dtype | None = None
    ) -> nn.Module:
        return load_checkpoint(path, device=device, dtype=dtype)

    def verify(self, path: str | os.PathLike[str]) -> list[str]:
        return verify_checkpoint(path)


STORE = ModelPlaneStore()
