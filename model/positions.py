"""Position encodings of a decoder: each maps ``(x, positions)`` to ``(x, rope)``.

Learned and sinusoidal encodings add to the token embeddings; RoPE leaves them alone and hands ``(cos, sin)``
to every attention layer. One interface keeps the model's forward free of per-encoding branches. A model
whose sliding-window layers use another RoPE base (``rope.local_theta``, Gemma 3) has a second rotary module
for them (:func:`build_local_positions`); without one, that module returns no table and every layer uses
the first.
"""

from __future__ import annotations

import torch
from torch import nn

from specs.model_config import ModelConfig, RoPEConfig
from tensor.positions import sinusoidal_positions
from tensor.rope import rope_attention_factor, rope_cos_sin, rope_inv_freq

Rope = tuple[torch.Tensor, torch.Tensor] | None


class LearnedPositions(nn.Module):
    """A table of ``max_seq_len + offset`` rows; position ``p`` reads row ``p + offset`` (BART keeps two rows
    before position 0, ``offset: 2``)."""

    def __init__(self, max_seq_len: int, d_model: int, offset: int = 0) -> None:
        super().__init__()
        self.embedding = nn.Embedding(max_seq_len + offset, d_model)
        self.offset = offset

    def forward(self, x: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, Rope]:
        # Positions were checked against max_seq_len at the model boundary (model/inputs.py).
        return x + self.embedding(positions + self.offset), None


class SinusoidalPositions(nn.Module):
    def forward(self, x: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, Rope]:
        return x + sinusoidal_positions(positions, x.shape[-1]).to(x.dtype), None


class RotaryPositions(nn.Module):
    """Computes the inverse frequencies and ``cos``/``sin`` for the given positions on the fly, on the input's
    device: a handful of tiny kernels per forward, and no state at all (no buffer to re-create after the model
    is materialised from the meta device, no cache that a ``torch.compile`` trace would see change).

    ``dynamic`` scaling grows the base with the current length of each row, taken as its largest position in
    this forward plus one: the number of tokens the row has seen, cached ones included, when positions count
    tokens (the default). It is a device tensor, so the forward stays one graph with no host sync. YaRN's
    attention factor multiplies both tables.
    """

    def __init__(self, head_dim: int, rope: RoPEConfig) -> None:
        super().__init__()
        self.head_dim, self.rope = head_dim, rope
        self.scale = rope_attention_factor(rope.scaling, rope.factor, rope.attention_factor)
        self.per_length = rope.scaling == "dynamic"  # the frequencies depend on how long the sequence is

    def forward(self, x: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, Rope]:
        rope = self.rope
        inv_freq = rope_inv_freq(
            self.head_dim,
            rope.theta,
            scaling=rope.scaling,
            factor=rope.factor,
            original_max_seq_len=rope.original_max_seq_len,
            low_freq_factor=rope.low_freq_factor,
            high_freq_factor=rope.high_freq_factor,
            beta_fast=rope.beta_fast,
            beta_slow=rope.beta_slow,
            seq_len=positions.amax(dim=-1) + 1 if self.per_length else None,
            device=x.device,
        )
        return x, rope_cos_sin(positions, inv_freq, x.dtype, scale=self.scale)


class NoPositions(nn.Module):
    def forward(self, x: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, Rope]:
        return x, None


def build_positions(cfg: ModelConfig) -> nn.Module:
    if cfg.positions == "learned":
        return LearnedPositions(cfg.max_seq_len, cfg.d_model, cfg.position_offset)
    if cfg.positions == "sinusoidal":
        return SinusoidalPositions()
    if cfg.positions == "rope" and cfg.rope is not None:  # validation pairs the two
        return RotaryPositions(cfg.head_dim, cfg.rope)
    return NoPositions()


def build_local_positions(cfg: ModelConfig) -> nn.Module:
    """The RoPE of sliding-window layers when ``rope.local_theta`` sets their own base: unscaled, base
    ``local_theta`` (Gemma 3's ``rope_local_base_freq``; its scaling applies to the global layers only).
    Otherwise a module that returns no table, and windowed layers use the global one."""
    if cfg.rope is None or cfg.rope.local_theta is None:
        return NoPositions()
    return RotaryPositions(cfg.head_dim, RoPEConfig(theta=cfg.rope.local_theta))
