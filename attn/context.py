"""AttentionContext: what every self-attention layer of one forward pass shares."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from specs.cache import CacheStep, KVCache


@dataclass(frozen=True, slots=True)
class AttentionContext:
    """Built once per forward by the model and handed unchanged through every block.

    ``rope``: ``(cos, sin)`` for the new tokens, or None without rotary positions. ``local_rope``: the table of
    sliding-window layers when it differs (``rope.local_theta``), else None. ``allow_mask``: boolean,
    True = may attend, broadcastable to ``(B, Hq, T, Tk)``. ``cache``: where layers write their keys/values;
    ``step``: what the cache said about this forward (query offsets per row, valid key lengths, page table).
    """

    rope: tuple[torch.Tensor, torch.Tensor] | None = None
    local_rope: tuple[torch.Tensor, torch.Tensor] | None = None
    allow_mask: torch.Tensor | None = None
    cache: KVCache | None = None
    step: CacheStep = CacheStep(q_offset=0)

    def rope_for(self, windowed: bool) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The RoPE table of a layer: ``local_rope`` for a sliding-window layer when there is one, else ``rope``."""
        return self.local_rope if windowed and self.local_rope is not None else self.rope


NO_CONTEXT = AttentionContext()
