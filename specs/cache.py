"""Decoding-state contracts: KV caches of attention layers, the encoder memory of cross-attention, and the
recurrent state of linear-attention layers.

A model's ``new_cache(batch, max_len)`` returns one object per decode (no globals). Its rows are independent:
each holds its own number of tokens, and one row can be rolled back, reordered or released while the
others go on (continuous batching, speculative decoding, beam search, prompts of different lengths).

One forward with a cache goes::

    step = cache.step(T)            # once, before the first layer: where the T new tokens go, what is visible
    k_all, v_all = cache.update(layer, k, v)    # each attention layer: write its new keys/values, read all
    cache.advance(T)                # once, after the last layer: the T tokens are committed

Tokens are committed only by ``advance``: a forward that fails half-way leaves the committed lengths as they
were, and the next forward overwrites what the early layers wrote. A right-padded batch (rows with fewer
real tokens than ``T``) is committed with ``advance(T)`` then rolled back per row with ``evict(T - lengths)``.

Implementations (contiguous, sliding-window ring, paged) live in ``attn`` and are interchangeable in every
decode test. A paged cache (:class:`PagedCache`) adds what a continuous-batching server needs: a shared pool of
fixed-size blocks handed to rows on demand (:class:`CacheFull` when none is left), prompt prefixes shared
between rows, and views over a subset of rows, so a forward runs only the rows that have work.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True, slots=True)
class CacheLayout:
    """The model a cache was built for; a model refuses a cache whose layout is not its own."""

    n_layers: int
    batch: int
    n_kv_heads: int
    head_dim: int
    max_len: int
    dtype: str


@dataclass(frozen=True, slots=True)
class CacheStep:
    """What every attention layer of one forward needs from the cache, decided once before the first layer.

    ``q_offset``: absolute position of each row's first new token (the tokens it already holds): an int when
    every row holds the same number and the cache knows it without a device sync, else a ``(B,)`` tensor.
    ``kv_lens``: ``(B,)`` valid keys per row in what ``update`` returns, or None when all of them are valid.
    ``block_table``: ``(B, NB)`` pages per row when ``update`` returns page pools (paged caches), else None.
    These are the fields of the same names in :class:`specs.AttentionCall`.
    """

    q_offset: int | torch.Tensor
    kv_lens: torch.Tensor | None = None
    block_table: torch.Tensor | None = None


@runtime_checkable
class KVCache(Protocol):
    """Keys and values of the tokens decoded so far, per layer and per row."""

    @property
    def layout(self) -> CacheLayout: ...

    @property
    def max_len(self) -> int:
        """The most tokens a row can hold."""
        ...

    @property
    def seq_lens(self) -> torch.Tensor:
        """``(B,)`` int64 on the cache's device: committed tokens of each row."""
        ...

    def step(self, n_new: int) -> CacheStep:
        """Prepare a forward of ``n_new`` tokens per row. Raises ``ValueError`` naming the row when one would
        overflow ``max_len`` (where that is known without a device sync) — before anything is written."""
        ...

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write ``k, v (B, Hkv, T, D)`` after each row's committed tokens and return what the layer's queries
        attend over: ``(B, Hkv, Tk, D)`` dense tensors, or page pools read through ``step().block_table``."""
        ...

    def advance(self, n_new: int) -> None:
        """Commit the ``n_new`` tokens of the current forward in every row."""
        ...

    def evict(self, n: int | torch.Tensor) -> None:
        """Drop the newest ``n`` tokens of every row, or ``n[b]`` of row ``b`` for a ``(B,)`` tensor (rollback
        of rejected speculative tokens, or of right padding)."""
        ...

    def reset(self, rows: Sequence[int] | None = None) -> None:
        """Forget every token of ``rows`` (default: all rows): release slots. The memory stays allocated."""
        ...

    def reorder(self, indices: torch.Tensor) -> None:
        """Make row ``i`` a copy of row ``indices[i]``, lengths included (beam search)."""
        ...

    def bytes(self) -> int:
        """Bytes of memory the cache holds."""
        ...


@dataclass(frozen=True, slots=True)
class PagedSpec:
    """Asks ``new_cache`` for a paged cache: ``num_blocks`` blocks of ``block_size`` tokens shared by every row
    (default: enough for every row to reach ``max_len``, the memory of a contiguous cache)."""

    block_size: int = 16
    num_blocks: int | None = None

    def __post_init__(self) -> None:
        if self.block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {self.block_size}")
        if self.num_blocks is not None and self.num_blocks < 1:
            raise ValueError(f"num_blocks must be >= 1, got {self.num_blocks}")


class CacheFull(RuntimeError):
    """A paged cache has too few free blocks for a step; raised before anything is written, so the caller can
    release rows (``reset``) and retry."""


@runtime_checkable
class PagedCache(KVCache, Protocol):
    """A :class:`KVCache` over a pool of blocks: rows hold blocks only for the tokens they have, so rows of very
    different lengths share one memory budget.

    ``step`` takes the blocks the new tokens need (raising :class:`CacheFull` when too few are free), ``evict``
    and ``reset`` give back the blocks a row no longer fills. Whole blocks of a prompt are shared between rows
    (reference counted): ``share_prefix`` links what another row already computed, and a row never writes into
    a block it shares (it copies it first).
    """

    @property
    def block_size(self) -> int:
        """Tokens per block."""
        ...

    @property
    def blocks_total(self) -> int: ...

    @property
    def blocks_free(self) -> int:
        """Blocks no row holds."""
        ...

    def cached_prefix(self, token_ids: Sequence[int]) -> int:
        """How many leading tokens of ``token_ids`` ``share_prefix`` would link now (whole blocks, at most
        ``len(token_ids) - 1`` tokens, so a forward still computes the last one); changes nothing."""
        ...

    def share_prefix(self, row: int, token_ids: Sequence[int]) -> int:
        """Start the empty ``row`` as a row whose tokens begin with ``token_ids``: link the blocks other rows hold
        for its longest cached prefix and return how many tokens that covers (the row's length). Blocks the row
        fills with the rest of ``token_ids`` are offered to later rows once committed."""
        ...

    def select(self, rows: Sequence[int]) -> PagedCache:
        """A cache over ``rows`` of this one (its row ``i`` is row ``rows[i]`` here), sharing blocks and lengths:
        what a forward through the view writes and commits, this cache holds."""
        ...


@runtime_checkable
class MemoryKV(Protocol):
    """The encoder memory of an encoder-decoder's cross-attention: keys/values projected once per request
    and read by every decoder step. A :class:`specs.Seq2SeqLM`'s cache implements this and :class:`KVCache`;
    ``reorder`` and ``reset`` of the cache apply to the memory too."""

    def memory(self, layer: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The layer's cross-attention keys and values ``(B, Hkv, S, D)``, or None before the encoder ran."""
        ...

    def set_memory(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> None: ...


@runtime_checkable
class RecurrentState(Protocol):
    """State of linear-attention layers (e.g. Gated DeltaNet): fixed-size tensors per layer, not a sequence.

    A layer's state is a mapping of named tensors with the batch first (Gated DeltaNet keeps ``"recurrent"``
    ``(B, H, Dk, Dv)`` and ``"conv"``, the short convolution's last inputs). A hybrid model's cache implements
    this and :class:`KVCache`; its ``reorder`` and ``reset`` apply to these states too, and ``evict`` raises
    unless the cache kept the states it would roll back to.
    """

    def state(self, layer: int) -> Mapping[str, torch.Tensor] | None:
        """The layer's state, or None before the first token."""
        ...

    def set_state(self, layer: int, state: Mapping[str, torch.Tensor]) -> None: ...
