"""StaticKVCache: a preallocated, contiguous implementation of :class:`specs.KVCache`.

Memory for ``max_len`` tokens per row is allocated up front (one tensor for keys, one for values, across all
layers), so decoding allocates nothing per step. Token ``j`` of row ``b`` is stored at slot ``j``; each row
has its own length.

Two ways to run, chosen when the cache is built:

* ``fixed_shapes=False`` (eager decoding): the lengths are mirrored on the host, so ``update`` returns only the
  slots in use (attention costs what the tokens cost) and an overflow is refused before anything is written;
* ``fixed_shapes=True`` (compiled decoding, gpt-fast style): nothing reads a length on the host, ``update``
  returns the whole ``max_len`` buffers with per-row valid lengths, so one decode step has the same shapes
  every time and ``torch.compile(fullgraph=True)`` / CUDA graphs capture it once.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from attn.cache_checks import (
    check_new_tokens,
    check_reorder,
    check_rows,
    check_update,
    evict_counts,
    refuse_over_evict,
    refuse_overflow,
)
from specs.cache import CacheLayout, CacheStep
from specs.tensor_spec import dtype_name


class StaticKVCache:
    """Keys/values of shape ``(L, B, Hkv, max_len, D)`` and ``(B,)`` committed lengths."""

    def __init__(
        self,
        *,
        n_layers: int,
        batch: int,
        n_kv_heads: int,
        head_dim: int,
        max_len: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
        fixed_shapes: bool = False,
    ) -> None:
        if min(n_layers, batch, n_kv_heads, head_dim, max_len) < 1:
            raise ValueError(
                f"cache sizes must be >= 1: n_layers={n_layers}, batch={batch}, n_kv_heads={n_kv_heads}, "
                f"head_dim={head_dim}, max_len={max_len}"
            )
        shape = (n_layers, batch, n_kv_heads, max_len, head_dim)
        self._k = torch.zeros(shape, dtype=dtype, device=device)
        self._v = torch.zeros(shape, dtype=dtype, device=device)
        self._lens = torch.zeros(batch, dtype=torch.int64, device=self._k.device)
        self._rows = torch.arange(batch, device=self._k.device)
        self._host: list[int] | None = None if fixed_shapes else [0] * batch
        self.fixed_shapes = fixed_shapes
        self._layout = CacheLayout(
            n_layers=n_layers, batch=batch, n_kv_heads=n_kv_heads, head_dim=head_dim, max_len=max_len,
            dtype=dtype_name(self._k),
        )

    @property
    def layout(self) -> CacheLayout:
        return self._layout

    @property
    def max_len(self) -> int:
        return self._layout.max_len

    @property
    def seq_lens(self) -> torch.Tensor:
        return self._lens.clone()

    # ------------------------------------------------------------------------------------------------ forward

    def step(self, n_new: int) -> CacheStep:
        check_new_tokens(n_new)
        if self._host is None:
            # No host copy of the lengths: an overflow is caught on the device (a sync-free assert on GPU).
            torch._assert_async((self._lens + n_new <= self.max_len).all(), "KV cache is full")
            return CacheStep(q_offset=self._lens.clone(), kv_lens=self._lens + n_new)
        refuse_overflow(self._host, n_new, self.max_len)
        if len(set(self._host)) == 1:
            return CacheStep(q_offset=self._host[0])
        return CacheStep(q_offset=self._lens.clone(), kv_lens=self._lens + n_new)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n_new = check_update(self._layout, self._k.dtype, layer, k, v)
        if self._host is not None and len(set(self._host)) == 1:  # every row at the same length: a plain slice
            start = self._host[0]
            self._k[layer, :, :, start : start + n_new] = k
            self._v[layer, :, :, start : start + n_new] = v
        else:
            slots = self._lens[:, None] + torch.arange(n_new, device=self._lens.device)  # (B, T)
            rows = self._rows[:, None]
            # One index_put on the whole buffer, (layer, row, slot) picked by index tensors; the values are laid
            # out (B, T, Hkv, D), the indexed dimensions first. Not a write through a view of the layer: under
            # torch.compile a view mutation becomes a scatter of the whole buffer copied back after the graph,
            # so every layer's update cost a copy of every layer's cache (a compiled SmolLM2 step grew with the
            # cache's size: 18.6 ms at 256 slots, 154 ms at 4096).
            at = (torch.full_like(slots, layer), rows, slice(None), slots)
            self._k[at] = k.transpose(1, 2)
            self._v[at] = v.transpose(1, 2)
        if self._host is None:
            return self._k[layer], self._v[layer]
        end = max(self._host) + n_new
        return self._k[layer, :, :, :end], self._v[layer, :, :, :end]

    def advance(self, n_new: int) -> None:
        self._lens += n_new
        if self._host is not None:
            self._host = [n + n_new for n in self._host]

    # ------------------------------------------------------------------------------------------- row control

    def evict(self, n: int | torch.Tensor) -> None:
        per_row = evict_counts(n, self._layout.batch)
        if self._host is not None:
            counts = per_row.tolist()
            refuse_over_evict(self._host, counts)
            self._host = [have - drop for have, drop in zip(self._host, counts)]
        self._lens -= per_row.to(self._lens.device)

    def reset(self, rows: Sequence[int] | None = None) -> None:
        if rows is None:
            self._lens.zero_()
            if self._host is not None:
                self._host = [0] * self._layout.batch
            return
        rows = check_rows(rows, self._layout.batch, "reset")
        self._lens[rows] = 0
        if self._host is not None:
            for b in rows:
                self._host[b] = 0

    def reorder(self, indices: torch.Tensor) -> None:
        check_reorder(indices, self._layout.batch)
        indices = indices.to(self._k.device)
        # Only the slots written so far carry anything worth moving.
        filled = self.max_len if self._host is None else max(self._host)
        self._k[:, :, :, :filled] = self._k[:, :, :, :filled].index_select(1, indices)
        self._v[:, :, :, :filled] = self._v[:, :, :, :filled].index_select(1, indices)
        self._lens.copy_(self._lens.index_select(0, indices))
        if self._host is not None:
            self._host = [self._host[i] for i in indices.tolist()]

    def bytes(self) -> int:
        return 2 * self._k.numel() * self._k.element_size() + self._lens.numel() * self._lens.element_size()
