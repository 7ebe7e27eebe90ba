"""PagedKVCache: a :class:`specs.PagedCache` whose rows hold fixed-size blocks of a shared pool (vLLM's layout).

Keys and values live in pools of pages ``(L, P, Hkv, S, D)``; each row has a block table, the list of pages
that hold its tokens in order (token ``j`` is slot ``j % S`` of page ``table[j // S]``). A row takes pages as
it grows (``step``) and gives them back when rolled back (``evict``) or released (``reset``), so memory follows
the tokens actually held rather than ``batch * max_len``. ``update`` returns the pools of a layer and ``step``
the ``(B, NB)`` block table; attention reads pages through it (:mod:`attn.dispatch` gathers them for kernels
that lack the ``paged`` capability).

Prompt prefixes are shared: whole blocks a row filled with known tokens (``share_prefix``) are published in
the :class:`attn.block_allocator.BlockAllocator`, and a later row with the same leading tokens links them
instead of computing them again. A row never writes into a block another row holds: ``step`` copies it first.

Lengths and tables are kept on the host (allocation is host work anyway), so every overflow is refused before
anything is written: past ``max_len`` with ``ValueError``, out of blocks with :class:`specs.CacheFull`.
``select(rows)`` gives a view over some rows, sharing everything, so a forward runs only the rows with work.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import torch

from attn.block_allocator import NO_PARENT, BlockAllocator
from attn.cache_checks import (
    check_new_tokens,
    check_reorder,
    check_rows,
    check_update,
    evict_counts,
    refuse_over_evict,
    refuse_overflow,
)
from specs.cache import CacheFull, CacheLayout, CacheStep
from specs.tensor_spec import dtype_name


def _blocks_for(tokens: int, block_size: int) -> int:
    return -(-tokens // block_size)


class _Pool:
    """What every view of one paged cache shares: the page pools, the allocator, and each row's table, length,
    known leading tokens and how many of its blocks were already considered for publishing."""

    def __init__(
        self, n_layers: int, batch: int, n_kv_heads: int, head_dim: int, max_len: int, block_size: int,
        num_blocks: int, dtype: torch.dtype, device: torch.device | str | None,
    ) -> None:
        shape = (n_layers, num_blocks, n_kv_heads, block_size, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.alloc = BlockAllocator(num_blocks)
        self.max_len, self.block_size = max_len, block_size
        self.tables: list[list[int]] = [[] for _ in range(batch)]
        self.lens = [0] * batch
        self.tokens: list[list[int]] = [[] for _ in range(batch)]
        self.offered = [0] * batch

    def copy_block(self, src: int, dst: int) -> None:
        self.k[:, dst] = self.k[:, src]
        self.v[:, dst] = self.v[:, src]

    def release_row(self, row: int, keep_blocks: int = 0) -> None:
        """Give back the row's blocks past its first ``keep_blocks``."""
        table = self.tables[row]
        for block in table[keep_blocks:]:
            self.alloc.release(block)
        del table[keep_blocks:]

    def lookup_prefix(self, token_ids: Sequence[int]) -> list[int]:
        """The published blocks holding the longest whole-block prefix of ``token_ids`` (all but its last token)."""
        size, blocks, parent = self.block_size, [], NO_PARENT
        for j in range((len(token_ids) - 1) // size):
            block = self.alloc.lookup((parent, tuple(token_ids[j * size : (j + 1) * size])))
            if block is None:
                break
            blocks.append(block)
            parent = block
        return blocks

    def offer(self, row: int) -> None:
        """Publish the row's blocks that are now full of committed, known tokens."""
        size, table, known = self.block_size, self.tables[row], self.tokens[row]
        full = min(self.lens[row], len(known)) // size
        for j in range(self.offered[row], full):
            parent = table[j - 1] if j else NO_PARENT
            # Lookups walk through published blocks only: under an unpublished parent a key is unreachable.
            if j and not self.alloc.published(parent):
                break
            self.alloc.publish(table[j], (parent, tuple(known[j * size : (j + 1) * size])))
        self.offered[row] = max(self.offered[row], full)


class PagedKVCache:
    """``batch`` rows of up to ``max_len`` tokens over ``num_blocks`` blocks of ``block_size`` tokens (default:
    enough for every row to reach ``max_len``)."""

    def __init__(
        self,
        *,
        n_layers: int,
        batch: int,
        n_kv_heads: int,
        head_dim: int,
        max_len: int,
        block_size: int = 16,
        num_blocks: int | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        if min(n_layers, batch, n_kv_heads, head_dim, max_len, block_size) < 1:
            raise ValueError(
                f"cache sizes must be >= 1: n_layers={n_layers}, batch={batch}, n_kv_heads={n_kv_heads}, "
                f"head_dim={head_dim}, max_len={max_len}, block_size={block_size}"
            )
        if num_blocks is None:
            num_blocks = batch * _blocks_for(max_len, block_size)
        pool = _Pool(n_layers, batch, n_kv_heads, head_dim, max_len, block_size, num_blocks, dtype, device)
        self._attach(pool, list(range(batch)))

    def _attach(self, pool: _Pool, rows: list[int]) -> None:
        self._pool, self._rows = pool, rows
        self._write: tuple[torch.Tensor, torch.Tensor, int] | None = None  # slots the current forward writes
        _, _, n_kv_heads, _, head_dim = pool.k.shape
        self._layout = CacheLayout(
            n_layers=pool.k.shape[0], batch=len(rows), n_kv_heads=n_kv_heads, head_dim=head_dim,
            max_len=pool.max_len, dtype=dtype_name(pool.k),
        )

    def select(self, rows: Sequence[int]) -> PagedKVCache:
        local = self._check_rows(rows, "select")
        if not local or len(set(local)) != len(local):
            raise ValueError(f"select takes distinct rows, at least one, got {local}")
        view = object.__new__(PagedKVCache)
        view._attach(self._pool, [self._rows[i] for i in local])
        return view

    # --------------------------------------------------------------------------------------------- geometry

    @property
    def layout(self) -> CacheLayout:
        return self._layout

    @property
    def max_len(self) -> int:
        return self._pool.max_len

    @property
    def seq_lens(self) -> torch.Tensor:
        return torch.tensor([self._pool.lens[r] for r in self._rows], dtype=torch.int64, device=self._pool.k.device)

    @property
    def block_size(self) -> int:
        return self._pool.block_size

    @property
    def blocks_total(self) -> int:
        return self._pool.alloc.total

    @property
    def blocks_free(self) -> int:
        return self._pool.alloc.free

    # ------------------------------------------------------------------------------------------------ forward

    def step(self, n_new: int) -> CacheStep:
        check_new_tokens(n_new)
        pool, size = self._pool, self._pool.block_size
        lens = [pool.lens[r] for r in self._rows]
        refuse_overflow(lens, n_new, pool.max_len)
        ends = [_blocks_for(n + n_new, size) for n in lens]
        self._take_blocks(lens, ends)
        device = pool.k.device
        width = max(ends)
        # Rows with fewer pages point the rest of their table at page 0: those keys lie past kv_lens, unseen.
        table = torch.tensor(
            [pool.tables[r][:width] + [0] * (width - min(len(pool.tables[r]), width)) for r in self._rows],
            dtype=torch.int64, device=device,
        )
        lens_t = torch.tensor(lens, dtype=torch.int64, device=device)
        positions = lens_t[:, None] + torch.arange(n_new, device=device)  # (B, T) logical slots written
        self._write = (table.gather(1, positions // size), positions % size, n_new)
        q_offset: int | torch.Tensor = lens[0] if len(set(lens)) == 1 else lens_t
        # Keys are read page by page, so past each row's tokens lie unwritten slots: kv_lens is always needed.
        return CacheStep(q_offset=q_offset, kv_lens=lens_t + n_new, block_table=table)

    def _take_blocks(self, lens: list[int], ends: list[int]) -> None:
        """Give each row the blocks its new tokens need, copying the blocks it would write but shares; refuse
        with CacheFull, before changing anything, when too few blocks are free."""
        pool, alloc, size = self._pool, self._pool.alloc, self._pool.block_size
        writes = [
            pool.tables[r][j]
            for r, n, end in zip(self._rows, lens, ends)
            for j in range(n // size, min(end, len(pool.tables[r])))
        ]
        # A shared block written by k of this view's rows: each copies it, unless those k hold it all, in which
        # case the last one writes it in place.
        copies = sum(k if alloc.holders(b) > k else k - 1 for b, k in Counter(writes).items() if alloc.shared(b))
        grow = [max(0, end - len(pool.tables[r])) for r, end in zip(self._rows, ends)]
        need = copies + sum(grow)
        if need > alloc.free:
            short = [b for b, g in enumerate(grow) if g]
            raise CacheFull(
                f"KV cache is full: this step needs {need} more blocks of {size} tokens (rows {short} grow, "
                f"{copies} shared blocks to copy) and {alloc.free} of {alloc.total} are free; finish or reset rows, "
                "or build the cache with more blocks (PagedSpec(num_blocks=...))"
            )
        for r, n, end, g in zip(self._rows, lens, ends, grow):
            table = pool.tables[r]
            for j in range(n // size, min(end, len(table))):
                if alloc.shared(table[j]):
                    (fresh,) = alloc.allocate(1)
                    pool.copy_block(table[j], fresh)
                    alloc.release(table[j])
                    table[j] = fresh
                else:
                    alloc.unpublish(table[j])  # its only holder is about to change it
            table.extend(alloc.allocate(g))

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pool = self._pool
        n_new = check_update(self._layout, pool.k.dtype, layer, k, v)
        if self._write is None or self._write[2] != n_new:
            planned = "no step" if self._write is None else f"step({self._write[2]})"
            raise ValueError(f"update of {n_new} tokens after {planned}: call step(n_new) once before the layers")
        pages, slots, _ = self._write
        # (P, S, Hkv, D) views, so two index tensors pick (page, slot) pairs and write through.
        pool.k[layer].transpose(1, 2)[pages, slots] = k.transpose(1, 2)
        pool.v[layer].transpose(1, 2)[pages, slots] = v.transpose(1, 2)
        return pool.k[layer], pool.v[layer]

    def advance(self, n_new: int) -> None:
        pool = self._pool
        short = [b for b, r in enumerate(self._rows) if pool.lens[r] + n_new > len(pool.tables[r]) * pool.block_size]
        if short:
            raise ValueError(f"cannot commit {n_new} tokens to row {short[0]}: step({n_new}) did not run for them")
        for r in self._rows:
            pool.lens[r] += n_new
            pool.offer(r)
        self._write = None

    # ------------------------------------------------------------------------------------------- row control

    def evict(self, n: int | torch.Tensor) -> None:
        counts = evict_counts(n, self._layout.batch).tolist()
        pool = self._pool
        refuse_over_evict([pool.lens[r] for r in self._rows], counts)
        for r, drop in zip(self._rows, counts):
            length = pool.lens[r] - drop
            pool.lens[r] = length
            pool.release_row(r, keep_blocks=_blocks_for(length, pool.block_size))
            del pool.tokens[r][length:]  # what follows is no longer known to be those tokens
            pool.offered[r] = min(pool.offered[r], length // pool.block_size)

    def reset(self, rows: Sequence[int] | None = None) -> None:
        local = range(len(self._rows)) if rows is None else self._check_rows(rows, "reset")
        pool = self._pool
        for i in local:
            r = self._rows[i]
            pool.release_row(r)
            pool.lens[r], pool.tokens[r], pool.offered[r] = 0, [], 0

    def reorder(self, indices: torch.Tensor) -> None:
        check_reorder(indices, self._layout.batch)
        sources = [self._rows[i] for i in self._check_rows(indices.tolist(), "reorder")]
        pool = self._pool
        tables = [list(pool.tables[s]) for s in sources]
        for block in (b for table in tables for b in table):  # hold the new references before dropping the old
            pool.alloc.retain(block)
        state = [(pool.lens[s], list(pool.tokens[s]), pool.offered[s]) for s in sources]
        for r, table, (length, tokens, offered) in zip(self._rows, tables, state):
            pool.release_row(r)
            pool.tables[r], pool.lens[r], pool.tokens[r], pool.offered[r] = table, length, tokens, offered

    def bytes(self) -> int:
        """The page pools (shared with every view of this cache)."""
        return 2 * self._pool.k.numel() * self._pool.k.element_size()

    # --------------------------------------------------------------------------------------------- prefixes

    def cached_prefix(self, token_ids: Sequence[int]) -> int:
        return len(self._pool.lookup_prefix(token_ids)) * self._pool.block_size

    def share_prefix(self, row: int, token_ids: Sequence[int]) -> int:
        (local,) = self._check_rows([row], "share_prefix")
        pool, r = self._pool, self._rows[local]
        if pool.lens[r] or pool.tables[r]:
            raise ValueError(f"share_prefix starts an empty row, but row {row} holds {pool.lens[r]} tokens; reset it first")
        blocks = pool.lookup_prefix(token_ids)
        for block in blocks:
            pool.alloc.retain(block)
        pool.tables[r], pool.tokens[r], pool.offered[r] = blocks, list(token_ids), len(blocks)
        pool.lens[r] = len(blocks) * pool.block_size
        return pool.lens[r]

    def _check_rows(self, rows: Sequence[int], what: str) -> list[int]:
        return check_rows(rows, len(self._rows), what)
