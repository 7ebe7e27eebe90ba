"""AttentionContext: what every self-attention layer of one forward pass shares."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from specs.cache import KVCache


@dataclass(frozen=True, slots=True)
class AttentionContext:
    """Built once per forward by the model and handed unchanged through every block.

    ``rope``: ``(cos, sin)`` for the new tokens, or None without rotary positions. ``allow_mask``: boolean,
    True = may attend, broadcastable to ``(B, Hq, T, q_offset + T)``. ``cache``: where layers append their
    keys/values. ``q_offset``: absolute position of the first new token (the tokens already cached).
    """

    rope: tuple[torch.Tensor, torch.Tensor] | None = None
    allow_mask: torch.Tensor | None = None
    cache: KVCache | None = None
    q_offset: int = 0


NO_CONTEXT = AttentionContext()
