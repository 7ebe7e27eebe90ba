"""AttentionContext: what every layer of one forward pass shares; ForwardRecord: what they report back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from specs.cache import CacheStep, KVCache


class ForwardRecord:
    """What layers report about one forward pass besides their output (a MoE layer's router statistics).

    The model makes one per forward, hands it to every layer in the :class:`AttentionContext`, and ``close``s
    it once the last layer has run, keeping what was added. A layer that runs again after that adds nothing:
    activation checkpointing recomputes a block's forward during the backward, and that rerun must not count
    twice (the tensors of the first run still carry their gradients through the recomputed graph).
    """

    __slots__ = ("_items", "_open")

    def __init__(self) -> None:
        self._items: dict[str, list[Any]] = {}
        self._open = True

    def add(self, name: str, item: Any) -> None:
        if self._open:
            self._items.setdefault(name, []).append(item)

    def close(self) -> dict[str, list[Any]]:
        """Everything added, by name, in layer order; later ``add`` calls are ignored."""
        self._open = False
        return self._items


@dataclass(frozen=True, slots=True)
class AttentionContext:
    """Built once per forward by the model and handed unchanged through every block.

    ``rope``: ``(cos, sin)`` for the new tokens, or None without rotary positions. ``local_rope``: the table of
    sliding-window layers when it differs (``rope.local_theta``), else None. ``allow_mask``: boolean,
    True = may attend, broadcastable to ``(B, Hq, T, Tk)``. ``cache``: where layers write their keys/values;
    ``step``: what the cache said about this forward (query offsets per row, valid key lengths, page table).
    ``record``: where layers report per-forward statistics (MoE routers), or None when nobody collects them.
    """

    rope: tuple[torch.Tensor, torch.Tensor] | None = None
    local_rope: tuple[torch.Tensor, torch.Tensor] | None = None
    allow_mask: torch.Tensor | None = None
    cache: KVCache | None = None
    step: CacheStep = CacheStep(q_offset=0)
    record: ForwardRecord | None = None

    def rope_for(self, windowed: bool) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The RoPE table of a layer: ``local_rope`` for a sliding-window layer when there is one, else ``rope``."""
        return self.local_rope if windowed and self.local_rope is not None else self.rope


NO_CONTEXT = AttentionContext()
