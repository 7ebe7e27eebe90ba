"""Rotary position embeddings (RoPE) in the rotate-half layout Hugging Face Llama uses.

Pairs are ``(x[k], x[k + D/2])`` rather than adjacent lanes, and ``cos``/``sin`` repeat the ``D/2``
frequencies twice on the last dim: ``cos = cos(cat(freqs, freqs))``. A checkpoint converted from the
interleaved (Meta) layout must permute its q/k projections, which is the usual HF convention.

Rotating ``q`` at position ``m`` and ``k`` at ``n`` makes ``<q_m, k_n>`` depend on ``m - n`` only.
"""

from __future__ import annotations

import torch
from torch import Tensor

ROPE_SCALINGS = ("none", "linear", "ntk")


def rope_inv_freq(
    head_dim: int,
    theta: float,
    *,
    scaling: str = "none",
    factor: float = 1.0,
    device: torch.device | str | None = None,
) -> Tensor:
    """``(head_dim // 2,)`` float32 inverse frequencies ``1 / theta ** (2i / head_dim)``.

    ``scaling``:
      * ``"none"``: the original RoPE (``factor`` must be 1);
      * ``"linear"``: position interpolation, ``inv_freq / factor`` (the same as dividing positions by
        ``factor``);
      * ``"ntk"``: NTK-aware scaling, the base becomes ``theta * factor ** (head_dim / (head_dim - 2))`` so the
        lowest frequency stretches by ``factor`` while the highest stays put.

    The unscaled table equals Hugging Face's ``LlamaRotaryEmbedding`` inverse frequencies bit for bit.
    """
    if scaling not in ROPE_SCALINGS:
        raise ValueError(f"unknown RoPE scaling {scaling!r}; expected one of {', '.join(ROPE_SCALINGS)}")
    if head_dim < 2 or head_dim % 2:
        raise ValueError(f"head_dim must be a positive even number, got {head_dim}")
    if theta <= 0:
        raise ValueError(f"theta must be > 0, got {theta}")
    if factor <= 0:
        raise ValueError(f"factor must be > 0, got {factor}")
    if scaling == "none" and factor != 1.0:
        raise ValueError(f"factor is {factor} but scaling is 'none'; use 'linear' or 'ntk' to scale")
    if scaling == "ntk":
        if head_dim == 2:
            raise ValueError("NTK scaling needs head_dim > 2 (its exponent is head_dim / (head_dim - 2))")
        theta = theta * factor ** (head_dim / (head_dim - 2))
    # Exponents built from an int64 arange then cast, exactly as HF does, so the fp32 table matches bit for bit.
    exponents = torch.arange(0, head_dim, 2, dtype=torch.int64, device=device).float() / head_dim
    inv_freq = 1.0 / (theta**exponents)
    if scaling == "linear":
        inv_freq = inv_freq / factor
    return inv_freq


def rope_cos_sin(positions: Tensor, inv_freq: Tensor, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    """``cos`` and ``sin`` tables of shape ``(..., T, head_dim)`` for ``positions`` of shape ``(..., T)``.

    Angles ``positions * inv_freq`` are formed and taken through cos/sin in float32 whatever ``dtype`` is:
    positions reach the thousands, where a bf16 angle is off by whole radians. Only the result is cast.
    Positions are usually integers; fractional ones are accepted (e.g. interpolated positions).
    """
    angles = positions[..., None].to(torch.float32) * inv_freq.to(device=positions.device, dtype=torch.float32)
    angles = torch.cat((angles, angles), dim=-1)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def rotate_half(x: Tensor) -> Tensor:
    """``cat(-x2, x1)`` where ``x1, x2`` are the two halves of the last dim: a 90-degree turn of each pair."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate ``x`` of shape ``(B, H, T, D)``: ``x * cos + rotate_half(x) * sin``, computed in ``x.dtype``.

    ``cos``/``sin`` are ``(T, D)`` (positions shared by the batch) or ``(B, T, D)`` (per-sequence positions,
    e.g. left padding or packing); the head axis is added here. They are cast to ``x.dtype`` first, as HF
    does, so the result matches HF in every precision.
    """
    if cos.shape != sin.shape:
        raise ValueError(f"cos and sin shapes differ: {list(cos.shape)} vs {list(sin.shape)}")
    if cos.shape[-1] != x.shape[-1]:
        raise ValueError(f"cos/sin last dim {cos.shape[-1]} does not match head dim {x.shape[-1]}")
    if cos.dim() == 3:
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    elif cos.dim() != 2:
        raise ValueError(f"cos/sin must be (T, D) or (B, T, D), got {list(cos.shape)}")
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return x * cos + rotate_half(x) * sin
