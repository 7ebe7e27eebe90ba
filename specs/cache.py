"""Decoding-state contracts: the KV cache of attention layers and the recurrent state of linear layers.

A model's ``new_cache(batch, max_len)`` returns one object; attention layers call ``update`` on it with their
layer index, and (in hybrid models) linear-attention layers read and write their state through
``RecurrentState``. Implementations (contiguous, sliding-window ring, paged) live in ``attn`` and are
interchangeable: every decode test runs against each of them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch


@runtime_checkable
class KVCache(Protocol):
    """Per-layer keys and values of the tokens decoded so far. No globals: one object per decode.

    ``update(layer, k, v)`` appends ``k, v`` of shape ``(B, Hkv, T, D)`` after the tokens already stored for
    ``layer`` and returns what attention must see for that layer: ``(k_all, v_all)`` of shape
    ``(B, Hkv, Tk, D)`` (dense tensors, possibly strided views, or for a paged cache a view that a paged-capable kernel reads
    through its block table). The new queries sit at absolute positions ``seq_len .. seq_len + T - 1``,
    where ``seq_len`` is read before the update.
    """

    @property
    def max_len(self) -> int:
        """The most tokens a row can hold."""
        ...

    @property
    def seq_len(self) -> int:
        """Tokens stored per row once every layer has been updated (rows advance together)."""
        ...

    @property
    def seq_lens(self) -> torch.Tensor:
        """``(B,)`` int64: tokens stored in each row."""
        ...

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def reset(self) -> None:
        """Forget every stored token (the memory stays allocated)."""
        ...

    def evict(self, n: int) -> None:
        """Drop the newest ``n`` tokens of every row (rollback of rejected speculative tokens)."""
        ...

    def reorder(self, indices: torch.Tensor) -> None:
        """Make row ``i`` a copy of row ``indices[i]`` (beam search)."""
        ...

    def bytes(self) -> int:
        """Bytes of memory the cache holds."""
        ...


@runtime_checkable
class RecurrentState(Protocol):
    """State of linear-attention layers (e.g. Gated DeltaNet): a fixed-size tensor per layer, not a sequence.

    A hybrid model's cache implements both ``KVCache`` (for its attention layers) and this protocol.
    """

    def state(self, layer: int) -> torch.Tensor | None:
        """The layer's state, or None before the first token."""
        ...

    def set_state(self, layer: int, state: torch.Tensor) -> None: ...
