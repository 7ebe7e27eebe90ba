"""The argument checks every KV cache in ``attn`` makes, so each refuses the same mistakes with the same words."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from specs.cache import CacheLayout
from specs.tensor_spec import TensorSpec

_KV = TensorSpec("k/v", ("B", "Hkv", "T", "D"))


def check_new_tokens(n_new: int) -> None:
    if n_new < 1:
        raise ValueError(f"a forward must bring at least one new token per row, got {n_new}")


def refuse_overflow(lens: Sequence[int], n_new: int, max_len: int) -> None:
    """Refuse a step that would take a row (host lengths ``lens``) past ``max_len``."""
    full = [b for b, n in enumerate(lens) if n + n_new > max_len]
    if full:
        b = full[0]
        raise ValueError(
            f"KV cache is full: row {b} holds {lens[b]} tokens and {n_new} more exceed max_len {max_len}; "
            "build the cache with a larger max_len (new_cache(batch, max_len))"
        )


def check_update(layout: CacheLayout, dtype: torch.dtype, layer: int, k: torch.Tensor, v: torch.Tensor) -> int:
    """Check a layer's new keys/values against the cache; returns how many tokens they hold."""
    dims = _KV.check(k, {"B": layout.batch, "Hkv": layout.n_kv_heads, "D": layout.head_dim})
    _KV.check(v, dims)
    if k.dtype != dtype or v.dtype != dtype:
        raise ValueError(
            f"KV cache holds {dtype} but layer {layer} gives {k.dtype}; create the cache with the "
            "model's dtype (new_cache(..., dtype=...))"
        )
    return dims["T"]


def evict_counts(n: int | torch.Tensor, batch: int) -> torch.Tensor:
    """``evict``'s argument as one count per row, ``(batch,)``."""
    per_row = torch.as_tensor(n, dtype=torch.int64)
    if per_row.dim() > 1 or per_row.numel() not in (1, batch):
        raise ValueError(f"evict takes an int or one count per row ({batch},), got {list(per_row.shape)}")
    return per_row.expand(batch)


def refuse_over_evict(held: Sequence[int], counts: Sequence[int]) -> None:
    bad = [b for b, (have, drop) in enumerate(zip(held, counts)) if not 0 <= drop <= have]
    if bad:
        b = bad[0]
        raise ValueError(f"cannot evict {counts[b]} tokens from row {b}, which holds {held[b]}")


def check_rows(rows: Sequence[int], batch: int, what: str) -> list[int]:
    """``rows`` as ints, each one of the cache's ``batch`` rows."""
    rows = [int(b) for b in rows]
    bad = [b for b in rows if not 0 <= b < batch]
    if bad:
        raise ValueError(f"cannot {what} row {bad[0]}: the cache has rows 0..{batch - 1}")
    return rows


def check_reorder(indices: torch.Tensor, batch: int) -> None:
    if indices.shape != (batch,):
        raise ValueError(f"reorder needs one source row per row: shape ({batch},), got {list(indices.shape)}")
