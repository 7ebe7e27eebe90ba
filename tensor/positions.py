"""Fixed sinusoidal position embeddings ("Attention Is All You Need", section 3.5)."""

from __future__ import annotations

import torch
from torch import Tensor


def sinusoidal_positions(positions: Tensor, dim: int, *, base: float = 10000.0) -> Tensor:
    """``(..., T, dim)`` float32 table for ``positions`` of shape ``(..., T)``.

    ``PE[p, 2i] = sin(p / base ** (2i / dim))`` and ``PE[p, 2i + 1] = cos(p / base ** (2i / dim))``: sine and
    cosine interleaved on the last dim, as in the paper (not the half/half layout of RoPE).
    """
    if dim < 2 or dim % 2:
        raise ValueError(f"dim must be a positive even number, got {dim}")
    exponents = torch.arange(0, dim, 2, dtype=torch.float32, device=positions.device) / dim
    angles = positions[..., None].to(torch.float32) / base**exponents
    return torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(-2)
