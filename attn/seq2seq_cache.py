"""Seq2SeqKVCache: the decoding state of an encoder-decoder, :class:`specs.KVCache` plus :class:`specs.MemoryKV`.

The decoder's self-attention keys/values grow token by token in a :class:`StaticKVCache` (this class is one,
so every row control and both modes, eager and ``fixed_shapes``, are that cache's). Beside them, each decoder
layer's cross-attention keys/values of the encoder output (the memory) are written once per request by
``set_memory`` and read by every later step: the encoder and the memory projections run once, not per token.

The memory covers all rows at once: ``reorder`` moves it with the rows (beam search) and ``reset()`` forgets
it, but ``reset(rows)`` keeps it (a row cannot take a new request's memory alone, so continuous batching of
encoder-decoder requests is not supported).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from attn.kv_cache import StaticKVCache
from specs.tensor_spec import TensorSpec

_MEMORY_KV = TensorSpec("memory k/v", ("B", "Hkv", "S", "D"))


class Seq2SeqKVCache(StaticKVCache):
    """A :class:`StaticKVCache` for the decoder's self-attention, plus per layer the cross-attention memory
    ``(B, Hkv, S, D)`` keys and values (held in the cache's dtype)."""

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
        super().__init__(
            n_layers=n_layers, batch=batch, n_kv_heads=n_kv_heads, head_dim=head_dim, max_len=max_len,
            dtype=dtype, device=device, fixed_shapes=fixed_shapes,
        )
        self._memory: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * self.layout.n_layers

    def memory(self, layer: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        return self._memory[self._layer(layer)]

    def set_memory(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> None:
        layout = self.layout
        dims = _MEMORY_KV.check(k, {"B": layout.batch, "Hkv": layout.n_kv_heads, "D": layout.head_dim})
        _MEMORY_KV.check(v, dims)
        self._memory[self._layer(layer)] = (k.to(self._k.dtype), v.to(self._k.dtype))

    def reset(self, rows: Sequence[int] | None = None) -> None:
        super().reset(rows)
        if rows is None:
            self._memory = [None] * self.layout.n_layers

    def reorder(self, indices: torch.Tensor) -> None:
        super().reorder(indices)  # checks indices
        picked = indices.to(self._k.device)
        self._memory = [
            None if kv is None else (kv[0].index_select(0, picked), kv[1].index_select(0, picked))
            for kv in self._memory
        ]

    def bytes(self) -> int:
        held = sum(t.numel() * t.element_size() for kv in self._memory if kv is not None for t in kv)
        return super().bytes() + held

    def _layer(self, layer: int) -> int:
        if not 0 <= layer < self.layout.n_layers:
            raise IndexError(f"layer {layer} is out of range for a cache of {self.layout.n_layers} layers")
        return layer
