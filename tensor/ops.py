"""Small elementwise and normalisation functions shared by attention and blocks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def softcap(x: Tensor, cap: float) -> Tensor:
    """``cap * tanh(x / cap)``: a smooth clamp to ``(-cap, cap)`` that is close to the identity for ``|x| << cap``.

    Used on attention logits and final logits (Gemma 2) to keep them from growing without bound.
    """
    if cap <= 0:
        raise ValueError(f"cap must be > 0, got {cap}")
    return cap * torch.tanh(x / cap)


def rms_norm(x: Tensor, weight: Tensor | None, eps: float) -> Tensor:
    """Root-mean-square norm over the last dim: ``x / sqrt(mean(x ** 2) + eps) * weight``.

    Follows Hugging Face ``LlamaRMSNorm``: the statistics and the scaling run in float32 (a bf16 mean of
    squares loses the small terms), the result is cast back to ``x.dtype`` and only then multiplied by
    ``weight``, so the weight multiply happens in the model's precision as HF does. The float32 part is
    PyTorch's fused ``rms_norm`` (one pass instead of five elementwise kernels). ``weight=None`` gives the plain,
    unscaled norm.
    """
    normed = F.rms_norm(x.to(torch.float32), (x.shape[-1],), eps=eps).to(x.dtype)
    return normed if weight is None else weight * normed


def drop_path(x: Tensor, p: float, training: bool) -> Tensor:
    """Stochastic depth: zero each sample (first dim) of a residual branch with probability ``p``.

    Surviving samples are scaled by ``1 / (1 - p)`` so the expectation over the draw equals ``x``. The
    identity when not ``training`` or ``p == 0``.
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"drop_path p must be in [0, 1), got {p}")
    if not training or p == 0.0:
        return x
    keep = 1.0 - p
    # One draw per sample, broadcast over every other dim, so a whole branch output is kept or dropped.
    survivors = torch.empty((x.shape[0],) + (1,) * (x.dim() - 1), dtype=x.dtype, device=x.device).bernoulli_(keep)
    return x * survivors.div_(keep)
