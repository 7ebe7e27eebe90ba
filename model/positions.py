"""Position encodings of a decoder: each maps ``(x, positions)`` to ``(x, rope)``.

Learned and sinusoidal encodings add to the token embeddings; RoPE leaves them alone and hands ``(cos, sin)``
to every attention layer. One interface keeps the model's forward free of per-encoding branches.
"""

from __future__ import annotations

import torch
from torch import nn

from specs.model_config import ModelConfig
from tensor.positions import sinusoidal_positions
from tensor.rope import rope_cos_sin, rope_inv_freq

Rope = tuple[torch.Tensor, torch.Tensor] | None


class LearnedPositions(nn.Module):
    def __init__(self, max_seq_len: int, d_model: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(max_seq_len, d_model)

    def forward(self, x: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, Rope]:
        # Positions were checked against max_seq_len (the table's size) at the model boundary (model/inputs.py).
        return x + self.embedding(positions), None


class SinusoidalPositions(nn.Module):
    def forward(self, x: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, Rope]:
        return x + sinusoidal_positions(positions, x.shape[-1]).to(x.dtype), None


class RotaryPositions(nn.Module):
    """Computes the inverse frequencies and ``cos``/``sin`` for the given positions on the fly, on the input's
    device: a handful of tiny kernels per forward, and no state at all (no buffer to re-create after the model
    is materialised from the meta device, no cache that a ``torch.compile`` trace would see change)."""

    def __init__(self, head_dim: int, theta: float, scaling: str, factor: float) -> None:
        super().__init__()
        self.head_dim, self.theta, self.scaling, self.factor = head_dim, theta, scaling, factor

    def forward(self, x: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, Rope]:
        inv_freq = rope_inv_freq(self.head_dim, self.theta, scaling=self.scaling, factor=self.factor, device=x.device)
        return x, rope_cos_sin(positions, inv_freq, x.dtype)


class NoPositions(nn.Module):
    def forward(self, x: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, Rope]:
        return x, None


def build_positions(cfg: ModelConfig) -> nn.Module:
    if cfg.positions == "learned":
        return LearnedPositions(cfg.max_seq_len, cfg.d_model)
    if cfg.positions == "sinusoidal":
        return SinusoidalPositions()
    if cfg.positions == "rope" and cfg.rope is not None:  # validation pairs the two
        return RotaryPositions(cfg.head_dim, cfg.rope.theta, cfg.rope.scaling, cfg.rope.factor)
    return NoPositions()
