"""Weight initialisers. Each works in place without recording autograd history and returns its argument."""

from __future__ import annotations

import math

import torch
from torch import Tensor


@torch.no_grad()
def init_normal_(weight: Tensor, std: float) -> Tensor:
    """Fill ``weight`` from ``N(0, std ** 2)``."""
    if std < 0:
        raise ValueError(f"std must be >= 0, got {std}")
    return weight.normal_(0.0, std)


@torch.no_grad()
def init_trunc_normal_(weight: Tensor, std: float, a: float | None = None, b: float | None = None) -> Tensor:
    """Fill ``weight`` from ``N(0, std ** 2)`` truncated to ``[a, b]`` (default ``[-3 std, 3 std]``).

    The bounds are absolute values, as in ``torch.nn.init.trunc_normal_``, not multiples of ``std``.
    """
    if std <= 0:
        raise ValueError(f"std must be > 0, got {std}")
    a = -3.0 * std if a is None else a
    b = 3.0 * std if b is None else b
    if a >= b:
        raise ValueError(f"truncation bounds must satisfy a < b, got a={a}, b={b}")
    return torch.nn.init.trunc_normal_(weight, mean=0.0, std=std, a=a, b=b)


@torch.no_grad()
def init_zeros_(weight: Tensor) -> Tensor:
    """Fill ``weight`` with zeros (biases; output projections of blocks that should start as the identity)."""
    return weight.zero_()


def residual_std(base_std: float, n_layers: int) -> float:
    """``base_std / sqrt(2 * n_layers)``: GPT-2's init for projections that write into the residual stream.

    Each layer adds two such projections (attention out, MLP down); shrinking them keeps the variance of the
    residual stream independent of depth at initialisation.
    """
    if n_layers < 1:
        raise ValueError(f"n_layers must be >= 1, got {n_layers}")
    return base_std / math.sqrt(2 * n_layers)
