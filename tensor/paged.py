"""Paged keys/values: a pool of fixed-size pages and a per-row table naming which pages hold a row's tokens."""

from __future__ import annotations

import dataclasses

from torch import Tensor

from specs.attention import AttentionCall


def gather_pages(pool: Tensor, block_table: Tensor) -> Tensor:
    """``pool (P, Hkv, S, D)`` read through ``block_table (B, NB)`` -> dense ``(B, Hkv, NB * S, D)``.

    Logical position ``j`` of row ``b`` is slot ``j % S`` of page ``block_table[b, j // S]``.
    """
    if pool.dim() != 4 or block_table.dim() != 2:
        raise ValueError(
            f"expected a (P, Hkv, S, D) pool and a (B, NB) block table, got {list(pool.shape)} and "
            f"{list(block_table.shape)}"
        )
    rows, n_pages = block_table.shape
    _, heads, page, dim = pool.shape
    pages = pool.index_select(0, block_table.reshape(-1).long())  # (B * NB, Hkv, S, D)
    return pages.view(rows, n_pages, heads, page, dim).transpose(1, 2).reshape(rows, heads, n_pages * page, dim)


def dense_call(call: AttentionCall) -> AttentionCall:
    """The same call with paged keys/values gathered into dense tensors (unchanged when not paged)."""
    if call.block_table is None:
        return call
    return dataclasses.replace(
        call,
        k=gather_pages(call.k, call.block_table),
        v=gather_pages(call.v, call.block_table),
        block_table=None,
    )
