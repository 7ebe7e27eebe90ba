"""The attention call (what ``attn`` hands a kernel) and kernel capabilities (what a kernel can serve).

Positions: query ``i`` of row ``b`` sits at absolute position ``q_offset[b] + i`` (``q_offset`` is one int for
every row, or a ``(B,)`` tensor when rows of a batch are at different lengths); key ``j`` at position ``j``.
Then

* ``causal``: key ``j`` is visible iff ``j <= q_offset + i`` (bottom-right aligned when
  ``q_offset == Tk - Tq``, which is what cached decoding needs; SDPA's ``is_causal`` is top-left aligned);
* ``window = W``: key ``j`` is visible iff ``q_offset + i - W < j`` (and, when not causal, also
  ``j < q_offset + i + W``): a causal query sees ``W`` keys, itself included; a non-causal one ``2W - 1``;
* ``allow_mask``: boolean, True = may attend, broadcastable to ``(B, Hq, Tq, Tk)``; the same meaning as
  PyTorch SDPA's boolean ``attn_mask``. ANDed with the two rules above;
* ``kv_lens``: ``(B,)`` integers, key ``j`` of row ``b`` is real iff ``j < kv_lens[b]`` (right padding as
  lengths, which a fused kernel reads without a mask tensor). ANDed with everything else.

Paged keys/values: with a ``block_table`` of shape ``(B, NB)``, ``k`` and ``v`` are pools of pages
``(P, Hkv, S, D)`` and logical key ``j`` of row ``b`` is slot ``j % S`` of page ``block_table[b, j // S]``, so
``Tk = NB * S``. Kernels that declare ``paged`` read the pool through the table; for the others ``attn`` hands a
gathered dense copy (:func:`tensor.gather_pages`).

A query row with no visible key produces zeros (and zero gradients), in every kernel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from specs.tensor_spec import TensorSpec, dtype_name

if TYPE_CHECKING:
    import torch

# Every feature a call may need and a kernel may declare, with the phrase errors use. The one list that
# AttentionCall.features, KernelCaps.missing, the "auto" shape buckets and config checks all read: adding a
# capability is one entry here plus the line in AttentionCall.features that says when a call needs it.
FEATURES: dict[str, str] = {
    "allow_mask": "a boolean allow mask",
    "causal": "the causal rule",
    "q_offset": "causal/window queries at an offset (cached decoding, per-row offsets)",
    "gqa": "grouped-query attention (fewer k/v heads than query heads)",
    "window": "a sliding window",
    "softcap": "logit soft-capping",
    "dropout": "attention dropout",
    "backward": "gradients",
    "kv_lens": "key lengths per row",
    "paged": "paged keys/values read through a block table",
}

Q_SPEC = TensorSpec("q", ("B", "Hq", "Tq", "D"))
K_SPEC = TensorSpec("k", ("B", "Hkv", "Tk", "D"))
V_SPEC = TensorSpec("v", ("B", "Hkv", "Tk", "D"))
K_POOL_SPEC = TensorSpec("k (paged)", ("P", "Hkv", "S", "D"))
V_POOL_SPEC = TensorSpec("v (paged)", ("P", "Hkv", "S", "D"))
_INTS = frozenset({"int64", "int32"})
_KV_LENS = TensorSpec("kv_lens", ("B",), dtypes=_INTS)
_Q_OFFSET = TensorSpec("q_offset", ("B",), dtypes=_INTS)
_BLOCK_TABLE = TensorSpec("block_table", ("B", "NB"), dtypes=_INTS)


@dataclass(frozen=True, kw_only=True, slots=True)
class AttentionCall:
    """One attention computation: ``softmax(mask(softcap(q @ k^T * scale))) @ v`` with GQA by head groups."""

    q: torch.Tensor  # (B, Hq, Tq, D)
    k: torch.Tensor  # (B, Hkv, Tk, D), or a page pool (P, Hkv, S, D) with block_table
    v: torch.Tensor  # like k
    allow_mask: torch.Tensor | None = None  # bool, broadcastable to (B, Hq, Tq, Tk)
    causal: bool = False
    window: int | None = None
    scale: float | None = None  # None: 1 / sqrt(D)
    softcap: float | None = None
    dropout_p: float = 0.0
    q_offset: int | torch.Tensor = 0  # int, or (B,) int per row (not checked for sign: that would sync)
    kv_lens: torch.Tensor | None = None  # (B,) int
    block_table: torch.Tensor | None = None  # (B, NB) int: pages of each row, in order

    def __post_init__(self) -> None:
        dims = Q_SPEC.check(self.q)
        if self.block_table is None:
            K_SPEC.check(self.k, dims)
            V_SPEC.check(self.v, dims)
        else:
            _BLOCK_TABLE.check(self.block_table, dims)
            K_POOL_SPEC.check(self.k, dims)
            V_POOL_SPEC.check(self.v, dims)
            dims["Tk"] = dims["NB"] * dims["S"]
        if dims["Hq"] % dims["Hkv"]:
            raise ValueError(f"q has {dims['Hq']} heads, not a multiple of the {dims['Hkv']} heads of k/v")
        if not (self.q.dtype == self.k.dtype == self.v.dtype):
            raise ValueError(f"q/k/v dtypes differ: {dtype_name(self.q)}, {dtype_name(self.k)}, {dtype_name(self.v)}")
        if self.allow_mask is not None:
            if dtype_name(self.allow_mask) != "bool":
                raise ValueError(f"allow_mask must be bool (True = may attend), got {dtype_name(self.allow_mask)}")
            shape = tuple(self.allow_mask.shape)
            full = (dims["B"], dims["Hq"], dims["Tq"], dims["Tk"])
            if len(shape) > 4 or any(m not in (1, f) for m, f in zip(shape[::-1], full[::-1])):
                raise ValueError(f"allow_mask of shape {list(shape)} does not broadcast to (B, Hq, Tq, Tk) = {list(full)}")
        if self.kv_lens is not None:
            _KV_LENS.check(self.kv_lens, dims)
        if self.window is not None and self.window < 1:
            raise ValueError(f"window must be >= 1, got {self.window}")
        if self.softcap is not None and self.softcap <= 0:
            raise ValueError(f"softcap must be > 0, got {self.softcap}")
        if not 0.0 <= self.dropout_p < 1.0:
            raise ValueError(f"dropout_p must be in [0, 1), got {self.dropout_p}")
        if isinstance(self.q_offset, int):
            if self.q_offset < 0:
                raise ValueError(f"q_offset must be >= 0, got {self.q_offset}")
        else:
            _Q_OFFSET.check(self.q_offset, dims)

    def features(self) -> frozenset[str]:
        """The names in :data:`FEATURES` this call needs."""
        offset = not isinstance(self.q_offset, int) or self.q_offset != 0
        needed = {
            "allow_mask": self.allow_mask is not None,
            "causal": self.causal,
            "q_offset": offset and (self.causal or self.window is not None),
            "gqa": self.gqa,
            "window": self.window is not None,
            "softcap": self.softcap is not None,
            "dropout": self.dropout_p > 0,
            "backward": self.needs_backward,
            "kv_lens": self.kv_lens is not None,
            "paged": self.block_table is not None,
        }
        return frozenset(name for name, need in needed.items() if need)

    @property
    def head_dim(self) -> int:
        return self.q.shape[-1]

    @property
    def key_len(self) -> int:
        """``Tk``: keys per row (for a paged call, pages per row times the page size)."""
        if self.block_table is None:
            return self.k.shape[2]
        return self.block_table.shape[1] * self.k.shape[2]

    @property
    def gqa(self) -> bool:
        return self.q.shape[1] != self.k.shape[1]

    @property
    def device_type(self) -> str:
        return self.q.device.type

    @property
    def needs_backward(self) -> bool:
        return self.q.requires_grad or self.k.requires_grad or self.v.requires_grad


@dataclass(frozen=True, kw_only=True, slots=True)
class KernelCaps:
    """What a kernel declares it can serve: dtypes, devices, head dims and the :data:`FEATURES` it has.

    :meth:`missing` lists what a call needs beyond them.
    """

    dtypes: frozenset[str]
    devices: frozenset[str]
    features: frozenset[str] = frozenset()
    head_dims: frozenset[int] | None = None  # None: any head dim

    def __post_init__(self) -> None:
        unknown = set(self.features) - FEATURES.keys()
        if unknown:
            raise ValueError(f"unknown kernel features {sorted(unknown)}; known: {', '.join(FEATURES)}")

    def missing(self, call: AttentionCall) -> list[str]:
        """The capabilities ``call`` needs that this kernel lacks, each as a short phrase."""
        out = []
        if dtype_name(call.q) not in self.dtypes:
            out.append(f"dtype {dtype_name(call.q)} (supports {', '.join(sorted(self.dtypes))})")
        if call.device_type not in self.devices:
            out.append(f"device {call.device_type} (supports {', '.join(sorted(self.devices))})")
        if self.head_dims is not None and call.head_dim not in self.head_dims:
            out.append(f"head dim {call.head_dim} (supports {sorted(self.head_dims)})")
        out.extend(name for name in FEATURES if name in call.features() - self.features)
        return out


class AttentionKernel(Protocol):
    """A kernel takes the call and returns the output ``(B, Hq, Tq, D)`` in the dtype of ``q``."""

    def __call__(self, call: AttentionCall) -> torch.Tensor: ...
