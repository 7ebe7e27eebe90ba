"""ALiBi: attention with linear biases (Press et al., "Train Short, Test Long", 2022).

Each head adds ``slope * (j - i)`` to its logits, a penalty growing linearly with distance to the key.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _geometric_slopes(n: int) -> list[float]:
    """The paper's slopes for ``n`` a power of two: ``r, r**2, ..., r**n`` with ``r = 2 ** (-8 / n)``."""
    ratio = 2.0 ** (-8.0 / n)
    return [ratio ** (k + 1) for k in range(n)]


def alibi_slopes(n_heads: int) -> Tensor:
    """``(n_heads,)`` float32 per-head slopes.

    For a power of two ``n`` the geometric sequence starting at ``2 ** (-8 / n)`` (8 heads: ``1/2 ... 1/256``).
    Otherwise (the rule BLOOM uses, from the authors' code) the slopes of the closest lower power of two ``c``,
    followed by every other slope of ``2c`` (its 1st, 3rd, 5th, ...) until there are ``n_heads``, so the extra
    heads interleave between the existing ones.
    """
    if n_heads < 1:
        raise ValueError(f"n_heads must be >= 1, got {n_heads}")
    closest = 2 ** math.floor(math.log2(n_heads))
    slopes = _geometric_slopes(closest)
    slopes += _geometric_slopes(2 * closest)[0::2][: n_heads - closest]
    return torch.tensor(slopes, dtype=torch.float32)


def alibi_bias(slopes: Tensor, tq: int, tk: int, *, q_offset: int = 0) -> Tensor:
    """``(H, Tq, Tk)`` additive bias ``slope_h * (j - (q_offset + i))``.

    Zero on the query's own position and negative for past keys (future keys get a positive value; a causal
    mask removes them). Uses the dtype and device of ``slopes``.
    """
    if slopes.dim() != 1:
        raise ValueError(f"slopes must be (H,), got {list(slopes.shape)}")
    if q_offset < 0:
        raise ValueError(f"q_offset must be >= 0, got {q_offset}")
    q_pos = torch.arange(q_offset, q_offset + tq, device=slopes.device)
    k_pos = torch.arange(tk, device=slopes.device)
    # Integer distances and a float32 product: a low-precision slope dtype must not round the distances too.
    distance = (k_pos[None, :] - q_pos[:, None]).to(torch.float32)
    return (slopes.to(torch.float32)[:, None, None] * distance).to(slopes.dtype)
