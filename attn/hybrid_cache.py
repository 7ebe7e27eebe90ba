"""HybridCache: the decoding cache of a hybrid model, keys/values for its softmax-attention layers and fixed-size
states for its linear-attention (Gated DeltaNet) layers.

It implements :class:`specs.KVCache` by handing the attention layers to a :class:`StaticKVCache` over those
layers only (layer ``i`` of the model is slot ``attention_layers.index(i)`` there), so lengths, steps and the
fixed-shapes mode are that cache's; and :class:`specs.RecurrentState` with one preallocated buffer per state
name across the linear layers, written in place (nothing is allocated per step).

Row control: ``reset`` zeroes the rows' states (a zero state is a fresh sequence), ``reorder`` moves them with
the keys/values. ``evict`` can only drop nothing: a recurrent state keeps no history to roll back to, so
speculative decoding and right-padded prefills (which evict) are refused with the reason.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from attn.cache_checks import check_reorder, check_rows, evict_counts
from attn.kv_cache import StaticKVCache
from specs.cache import CacheLayout, CacheStep

# Per-row shape of each named state, and its dtype (None: the cache's dtype).
StateShapes = Mapping[str, tuple[tuple[int, ...], torch.dtype | None]]


class HybridCache:
    """Implements :class:`specs.KVCache` and :class:`specs.RecurrentState`."""

    def __init__(
        self,
        *,
        n_layers: int,
        attention_layers: Sequence[int],
        state_shapes: StateShapes,
        batch: int,
        n_kv_heads: int,
        head_dim: int,
        max_len: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
        fixed_shapes: bool = False,
    ) -> None:
        self._kv_slot = {layer: slot for slot, layer in enumerate(attention_layers)}
        if not self._kv_slot or any(not 0 <= layer < n_layers for layer in self._kv_slot):
            raise ValueError(f"attention_layers must be some of the layers 0..{n_layers - 1}, got {list(attention_layers)}")
        self._kv = StaticKVCache(
            n_layers=len(self._kv_slot), batch=batch, n_kv_heads=n_kv_heads, head_dim=head_dim, max_len=max_len,
            dtype=dtype, device=device, fixed_shapes=fixed_shapes,
        )
        self._state_slot = {layer: slot for slot, layer in enumerate(i for i in range(n_layers) if i not in self._kv_slot)}
        self._states = {
            name: torch.zeros((len(self._state_slot), batch, *shape), dtype=state_dtype or dtype, device=device)
            for name, (shape, state_dtype) in state_shapes.items()
        }
        self._layout = CacheLayout(
            n_layers=n_layers, batch=batch, n_kv_heads=n_kv_heads, head_dim=head_dim, max_len=max_len,
            dtype=self._kv.layout.dtype,
        )
        self.fixed_shapes = fixed_shapes

    @property
    def layout(self) -> CacheLayout:
        return self._layout

    @property
    def max_len(self) -> int:
        return self._kv.max_len

    @property
    def seq_lens(self) -> torch.Tensor:
        return self._kv.seq_lens

    # ------------------------------------------------------------------------------------------------ forward

    def step(self, n_new: int) -> CacheStep:
        return self._kv.step(n_new)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if layer not in self._kv_slot:
            raise ValueError(f"layer {layer} is a linear-attention layer: it keeps a state (set_state), not keys/values")
        return self._kv.update(self._kv_slot[layer], k, v)

    def advance(self, n_new: int) -> None:
        self._kv.advance(n_new)

    def state(self, layer: int) -> Mapping[str, torch.Tensor]:
        """The layer's state, views into the cache's buffers; zeros for a row with no tokens yet."""
        slot = self._slot(layer)
        return {name: buffer[slot] for name, buffer in self._states.items()}

    def set_state(self, layer: int, state: Mapping[str, torch.Tensor]) -> None:
        slot = self._slot(layer)
        if set(state) != set(self._states):
            raise ValueError(f"layer {layer}'s state has {sorted(state)}, the cache holds {sorted(self._states)}")
        for name, value in state.items():
            self._states[name][slot].copy_(value)

    # ------------------------------------------------------------------------------------------- row control

    def evict(self, n: int | torch.Tensor) -> None:
        counts = evict_counts(n, self._layout.batch)
        if counts.any():
            raise ValueError(
                "a hybrid cache cannot evict tokens: its linear-attention layers keep one state per row, not the "
                "states before each token; decode without rollback (no speculative decoding, left-pad prompts)"
            )

    def reset(self, rows: Sequence[int] | None = None) -> None:
        self._kv.reset(rows)
        index = slice(None) if rows is None else check_rows(rows, self._layout.batch, "reset")
        for buffer in self._states.values():
            buffer[:, index] = 0

    def reorder(self, indices: torch.Tensor) -> None:
        check_reorder(indices, self._layout.batch)
        self._kv.reorder(indices)
        for buffer in self._states.values():
            buffer.copy_(buffer.index_select(1, indices.to(buffer.device)))

    def bytes(self) -> int:
        return self._kv.bytes() + sum(b.numel() * b.element_size() for b in self._states.values())

    def _slot(self, layer: int) -> int:
        if layer not in self._state_slot:
            raise ValueError(f"layer {layer} is a softmax-attention layer: it keeps keys/values (update), not a state")
        return self._state_slot[layer]
