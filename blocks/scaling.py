"""Parameter-free elementwise maps a model applies at its ends: a constant scale (Gemma's embedding scale) and
soft-capping (Gemma 2's final logits). Builders put them in place of ``nn.Identity`` when the config asks."""

from __future__ import annotations

import torch
from torch import nn

from tensor.ops import softcap


class Scale(nn.Module):
    """``x * factor``, with the factor rounded to ``x``'s dtype first (Gemma multiplies its embeddings by
    ``sqrt(d_model)`` in the model's dtype: 55.4256 becomes 55.5 in bfloat16)."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.full((), self.factor, dtype=x.dtype, device=x.device)

    def extra_repr(self) -> str:
        return f"factor={self.factor}"


class Softcap(nn.Module):
    """``cap * tanh(x / cap)``: a smooth clamp to ``(-cap, cap)``."""

    def __init__(self, cap: float) -> None:
        super().__init__()
        self.cap = cap

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return softcap(x, self.cap)

    def extra_repr(self) -> str:
        return f"cap={self.cap}"


def scale_or_identity(factor: float | None) -> nn.Module:
    return Scale(factor) if factor is not None else nn.Identity()


def softcap_or_identity(cap: float | None) -> nn.Module:
    return Softcap(cap) if cap is not None else nn.Identity()
