"""StaticKVCache: a contiguous, preallocated KV cache implementing :class:`specs.KVCache`.

Memory for ``max_len`` tokens per row is allocated up front (one tensor for keys, one for values, across all
layers), so decoding allocates nothing per step. Rows advance together; per-row padding is expressed with
the attention mask.
"""

from __future__ import annotations

import torch

from specs.tensor_spec import TensorSpec

_KV = TensorSpec("k/v", ("B", "Hkv", "T", "D"))


class StaticKVCache:
    """Keys/values of shape ``(L, B, Hkv, max_len, D)``; layer ``l`` holds ``lengths[l]`` tokens."""

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
    ) -> None:
        if min(n_layers, batch, n_kv_heads, head_dim, max_len) < 1:
            raise ValueError(
                f"cache sizes must be >= 1: n_layers={n_layers}, batch={batch}, n_kv_heads={n_kv_heads}, "
                f"head_dim={head_dim}, max_len={max_len}"
            )
        shape = (n_layers, batch, n_kv_heads, max_len, head_dim)
        self._k = torch.zeros(shape, dtype=dtype, device=device)
        self._v = torch.zeros(shape, dtype=dtype, device=device)
        self._lengths = [0] * n_layers
        self._dims = {"B": batch, "Hkv": n_kv_heads, "D": head_dim}

    @property
    def max_len(self) -> int:
        return self._k.shape[3]

    @property
    def seq_len(self) -> int:
        return min(self._lengths)

    @property
    def seq_lens(self) -> torch.Tensor:
        return torch.full((self._k.shape[1],), self.seq_len, dtype=torch.int64, device=self._k.device)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dims = _KV.check(k, dict(self._dims))
        _KV.check(v, dims)
        # Write after the committed tokens (the minimum over layers), not after this layer's own count: a forward
        # interrupted part-way leaves early layers ahead, and the next forward must overwrite what they wrote.
        start = self.seq_len
        end = start + dims["T"]
        if end > self.max_len:
            raise ValueError(
                f"KV cache is full: it holds {start} tokens, {dims['T']} more exceed max_len {self.max_len}"
            )
        if k.dtype != self._k.dtype:
            raise ValueError(f"KV cache holds {self._k.dtype} but layer {layer} gives {k.dtype}; create the cache "
                             "with the model's dtype (new_cache(..., dtype=...))")
        self._k[layer, :, :, start:end] = k
        self._v[layer, :, :, start:end] = v
        self._lengths[layer] = end
        return self._k[layer, :, :, :end], self._v[layer, :, :, :end]

    def reset(self) -> None:
        self._lengths = [0] * len(self._lengths)

    def evict(self, n: int) -> None:
        if not 0 <= n <= self.seq_len:
            raise ValueError(f"cannot evict {n} tokens from a cache holding {self.seq_len}")
        self._lengths = [length - n for length in self._lengths]

    def reorder(self, indices: torch.Tensor) -> None:
        if indices.shape != (self._k.shape[1],):
            raise ValueError(f"reorder needs one source row per row: shape ({self._k.shape[1]},), got {list(indices.shape)}")
        indices = indices.to(self._k.device)
        filled = max(self._lengths)  # only the positions written so far carry anything worth moving
        self._k[:, :, :, :filled] = self._k[:, :, :, :filled].index_select(1, indices)
        self._v[:, :, :, :filled] = self._v[:, :, :, :filled].index_select(1, indices)

    def bytes(self) -> int:
        return 2 * self._k.numel() * self._k.element_size()
