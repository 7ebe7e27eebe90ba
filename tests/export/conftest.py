"""A tiny decoder shared by the export tests (``from tests.export.conftest import tiny_lm``)."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

import model
import specs


def tiny_lm(seed: int = 0, **changes: object) -> nn.Module:
    """llama-tiny (GQA 4/2 heads, RoPE, SwiGLU, RMSNorm; 2 layers of width 64) with random weights, every norm
    moved off 1 so each parameter matters, in eval mode."""
    cfg = dataclasses.replace(specs.load_config("llama-tiny"), **changes)  # type: ignore[arg-type]
    torch.manual_seed(seed)
    lm = model.build(cfg)
    with torch.no_grad():
        for p in lm.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return lm.eval()
