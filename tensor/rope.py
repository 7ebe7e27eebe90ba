"""Rotary position embeddings (RoPE) in the rotate-half layout Hugging Face Llama uses, and their scalings.

Pairs are ``(x[k], x[k + D/2])`` rather than adjacent lanes, and ``cos``/``sin`` repeat the ``D/2``
frequencies twice on the last dim: ``cos = cos(cat(freqs, freqs))``. A checkpoint converted from the
interleaved (Meta) layout must permute its q/k projections, which is the usual HF convention.

Rotating ``q`` at position ``m`` and ``k`` at ``n`` makes ``<q_m, k_n>`` depend on ``m - n`` only.

The scalings (``rope_inv_freq``) follow the formulas ``transformers.modeling_rope_utils`` uses, written out
here and checked against it in ``tests/tensor/test_rope_scaling.py``:

* ``linear``: ``inv_freq / factor`` (position interpolation);
* ``ntk``: the base becomes ``theta * factor ** (D / (D - 2))`` (static NTK-aware scaling);
* ``dynamic``: the NTK base, grown with the current length ``L`` past the original context ``L0``:
  ``theta * (factor * L / L0 - (factor - 1)) ** (D / (D - 2))``, the plain base while ``L <= L0``;
* ``llama3``: wavelengths ``2 pi / f`` above ``L0 / low_freq_factor`` are interpolated (``f / factor``), those
  below ``L0 / high_freq_factor`` kept, and the band between blended linearly in ``L0 / wavelength``;
* ``yarn``: per frequency, a ramp over the dimension index between the dims that make ``beta_fast`` and
  ``beta_slow`` rotations over ``L0`` blends kept (fast) and interpolated (slow) frequencies; and
  :func:`rope_attention_factor` multiplies ``cos`` and ``sin`` (so ``q.k`` by its square).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

ROPE_SCALINGS = ("none", "linear", "ntk", "dynamic", "llama3", "yarn")
_NEEDS_ORIGINAL = ("dynamic", "llama3", "yarn")


def rope_inv_freq(
    head_dim: int,
    theta: float,
    *,
    scaling: str = "none",
    factor: float = 1.0,
    original_max_seq_len: int | None = None,
    low_freq_factor: float = 1.0,
    high_freq_factor: float = 4.0,
    beta_fast: float = 32.0,
    beta_slow: float = 1.0,
    seq_len: int | Tensor | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """``(head_dim // 2,)`` float32 inverse frequencies ``1 / theta ** (2i / head_dim)``, scaled by ``scaling``
    (see the module docstring; the parameters are those of ``specs.RoPEConfig``).

    ``seq_len`` is the current length for ``dynamic`` (ignored otherwise): an int, or an integer tensor of
    any shape ``S`` (e.g. one length per row), which gives ``S + (head_dim // 2,)`` frequencies computed on
    the device with no host sync (so it traces under ``torch.compile``). ``None`` means "within the original
    context". The unscaled table equals Hugging Face's ``LlamaRotaryEmbedding`` inverse frequencies bit for bit.
    """
    _check(head_dim, theta, scaling, factor, original_max_seq_len, low_freq_factor, high_freq_factor)
    base: float | Tensor = theta
    if scaling == "ntk":
        base = theta * factor ** (head_dim / (head_dim - 2))
    elif scaling == "dynamic" and seq_len is not None:
        assert original_max_seq_len is not None  # _check
        # Integer lengths clamped to the original context, then float32 arithmetic in HF's order of operations,
        # so the grown base matches transformers' own to the last float32 bit or so.
        length = torch.as_tensor(seq_len, device=device).clamp(min=original_max_seq_len)
        stretch = factor * length / original_max_seq_len - (factor - 1)
        base = (theta * stretch ** (head_dim / (head_dim - 2)))[..., None]
    # Exponents built from an int64 arange then cast, exactly as HF does, so the fp32 table matches bit for bit.
    exponents = torch.arange(0, head_dim, 2, dtype=torch.int64, device=device).float() / head_dim
    inv_freq = 1.0 / (base**exponents)
    if scaling == "linear":
        inv_freq = inv_freq / factor
    elif scaling == "llama3":
        assert original_max_seq_len is not None
        inv_freq = _llama3(inv_freq, factor, original_max_seq_len, low_freq_factor, high_freq_factor)
    elif scaling == "yarn":
        assert original_max_seq_len is not None
        inv_freq = _yarn(inv_freq, head_dim, theta, factor, original_max_seq_len, beta_fast, beta_slow)
    return inv_freq


def rope_attention_factor(scaling: str, factor: float = 1.0, attention_factor: float | None = None) -> float:
    """What ``cos`` and ``sin`` are multiplied by: 1, except for YaRN, where it is ``attention_factor`` or, when
    that is None, ``0.1 ln(factor) + 1`` (1 for ``factor <= 1``). Rotating both ``q`` and ``k`` with scaled
    tables multiplies the attention logits by its square, as in the YaRN paper and Hugging Face."""
    if scaling != "yarn":
        if attention_factor is not None:
            raise ValueError(f"attention_factor is a YaRN setting; scaling is {scaling!r}")
        return 1.0
    if attention_factor is not None:
        if attention_factor <= 0:
            raise ValueError(f"attention_factor must be > 0, got {attention_factor}")
        return float(attention_factor)
    return 0.1 * math.log(factor) + 1.0 if factor > 1 else 1.0


def rope_cos_sin(
    positions: Tensor, inv_freq: Tensor, dtype: torch.dtype = torch.float32, *, scale: float = 1.0
) -> tuple[Tensor, Tensor]:
    """``cos`` and ``sin`` tables of shape ``(..., T, head_dim)`` for ``positions`` of shape ``(..., T)``.

    ``inv_freq`` is ``(head_dim // 2,)``, or ``(..., head_dim // 2)`` with the leading dims of ``positions``
    (per-row frequencies, e.g. dynamic NTK). Angles ``positions * inv_freq`` are formed and taken through
    cos/sin in float32 whatever ``dtype`` is: positions reach the thousands, where a bf16 angle is off by whole
    radians. ``scale`` (YaRN's attention factor) multiplies both tables in float32; only the result is cast.
    Positions are usually integers; fractional ones are accepted (e.g. interpolated positions).
    """
    inv_freq = inv_freq.to(device=positions.device, dtype=torch.float32)
    if inv_freq.dim() > 1:
        inv_freq = inv_freq.unsqueeze(-2)  # (..., 1, D/2) against positions (..., T, 1)
    angles = positions[..., None].to(torch.float32) * inv_freq
    angles = torch.cat((angles, angles), dim=-1)
    cos, sin = angles.cos(), angles.sin()
    if scale != 1.0:
        cos, sin = cos * scale, sin * scale
    return cos.to(dtype), sin.to(dtype)


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


# ---------------------------------------------------------------------------------------------------- helpers


def _check(
    head_dim: int,
    theta: float,
    scaling: str,
    factor: float,
    original: int | None,
    low_freq_factor: float,
    high_freq_factor: float,
) -> None:
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
    if scaling in ("ntk", "dynamic") and head_dim == 2:
        raise ValueError(f"{scaling!r} scaling needs head_dim > 2 (its exponent is head_dim / (head_dim - 2))")
    if scaling in _NEEDS_ORIGINAL and (original is None or original < 1):
        raise ValueError(f"{scaling!r} scaling needs original_max_seq_len >= 1 (the trained context), got {original}")
    if scaling == "llama3" and not 0 < low_freq_factor < high_freq_factor:
        raise ValueError(f"llama3 scaling needs 0 < low_freq_factor < high_freq_factor, got {low_freq_factor}, {high_freq_factor}")
    if scaling == "yarn" and theta <= 1:
        raise ValueError(f"yarn scaling needs theta > 1 (its correction range divides by ln theta), got {theta}")


def _llama3(inv_freq: Tensor, factor: float, original: int, low_freq_factor: float, high_freq_factor: float) -> Tensor:
    wavelength = 2 * math.pi / inv_freq
    # 0 at the long-wavelength edge of the band (wavelength = original / low), 1 at the short one.
    smooth = (original / wavelength - low_freq_factor) / (high_freq_factor - low_freq_factor)
    blended = (1 - smooth) * inv_freq / factor + smooth * inv_freq
    kept = torch.where(wavelength < original / high_freq_factor, inv_freq, blended)
    return torch.where(wavelength > original / low_freq_factor, inv_freq / factor, kept)


def _yarn(
    inv_freq: Tensor, head_dim: int, theta: float, factor: float, original: int, beta_fast: float, beta_slow: float
) -> Tensor:
    def dim_of(rotations: float) -> float:
        """The (fractional) dimension index whose frequency turns ``rotations`` times over ``original`` tokens."""
        return head_dim * math.log(original / (rotations * 2 * math.pi)) / (2 * math.log(theta))

    # The correction range is widened to whole dims and kept inside the head (HF's default truncate=True).
    low = max(math.floor(dim_of(beta_fast)), 0)
    high = min(math.ceil(dim_of(beta_slow)), head_dim - 1)
    width = (high - low) or 0.001  # one dim wide: a step, not a division by zero
    index = torch.arange(head_dim // 2, dtype=torch.float32, device=inv_freq.device)
    ramp = ((index - low) / width).clamp(0, 1)  # 0: fast dims, extrapolated (kept); 1: slow dims, interpolated
    return inv_freq / factor * ramp + inv_freq * (1 - ramp)
