"""RMSNorm as a module: the QK-norm of attention heads here, and the block norm that ``blocks`` re-exports.

Two forms, chosen by :func:`build_rms_norm` from the config's ``norm_weight_offset``: the Llama form scales by
``weight`` (stored around 1), the Gemma form by ``offset + weight`` (stored around 0, offset 1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tensor.ops import rms_norm


class RMSNorm(nn.Module):
    """``x / rms(x) * weight`` over the last dim, normalised in float32 (as Llama does) and returned in the
    input dtype. Over the head dim of queries and keys it is QK-norm (Gemma 3, Qwen 3, OLMo 2).

    Under autocast a float32 weight meets bfloat16 heads; the product is cast back to the heads' dtype (the
    rounding Hugging Face's attention matmul applies), so queries, keys and values keep one dtype."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps).to(x.dtype)


class OffsetRMSNorm(RMSNorm):
    """``x / rms(x) * (offset + weight)`` (Gemma: offset 1, weights initialised to 0). Unlike Llama's form, the
    scale multiplies in float32 and only the result is cast to the input dtype, as Gemma does."""

    def __init__(self, dim: int, eps: float = 1e-6, *, offset: float = 1.0) -> None:
        super().__init__(dim, eps)
        self.offset = offset
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.weight)  # a unit scale: offset + 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.offset + self.weight.to(torch.float32)
        return F.rms_norm(x.to(torch.float32), (x.shape[-1],), scale, self.eps).to(x.dtype)

    def extra_repr(self) -> str:
        return f"offset={self.offset}"


def build_rms_norm(dim: int, eps: float, offset: float = 0.0) -> RMSNorm:
    """The Llama form without an offset, the Gemma form with one."""
    return OffsetRMSNorm(dim, eps, offset=offset) if offset else RMSNorm(dim, eps)
