"""The attention call (what ``attn`` hands a kernel) and kernel capabilities (what a kernel can serve).

Positions: query ``i`` sits at absolute position ``q_offset + i``; key ``j`` at position ``j``. Then

* ``causal``: key ``j`` is visible iff ``j <= q_offset + i`` (bottom-right aligned when
  ``q_offset == Tk - Tq``, which is what cached decoding needs; SDPA's ``is_causal`` is top-left aligned);
* ``window = W``: key ``j`` is visible iff ``q_offset + i - W < j`` (and, when not causal, also
  ``j < q_offset + i + W``): a causal query sees ``W`` keys, itself included; a non-causal one ``2W - 1``;
* ``allow_mask``: boolean, True = may attend, broadcastable to ``(B, Hq, Tq, Tk)``; the same meaning as
  PyTorch SDPA's boolean ``attn_mask``. ANDed with the two rules above;
* ``kv_lens``: ``(B,)`` integers, key ``j`` of row ``b`` is real iff ``j < kv_lens[b]`` (right padding as
  lengths, which a fused kernel reads without a mask tensor). ANDed with everything else.

A query row with no visible key produces zeros (and zero gradients), in every kernel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from specs.tensor_spec import TensorSpec, dtype_name

if TYPE_CHECKING:
    import torch

Q_SPEC = TensorSpec("q", ("B", "Hq", "Tq", "D"))
K_SPEC = TensorSpec("k", ("B", "Hkv", "Tk", "D"))
V_SPEC = TensorSpec("v", ("B", "Hkv", "Tk", "D"))
_KV_LENS = TensorSpec("kv_lens", ("B",), dtypes={"int64", "int32"})


@dataclass(frozen=True, kw_only=True, slots=True)
class AttentionCall:
    """One attention computation: ``softmax(mask(softcap(q @ k^T * scale))) @ v`` with GQA by head groups."""

    q: torch.Tensor  # (B, Hq, Tq, D)
    k: torch.Tensor  # (B, Hkv, Tk, D)
    v: torch.Tensor  # (B, Hkv, Tk, D)
    allow_mask: torch.Tensor | None = None  # bool, broadcastable to (B, Hq, Tq, Tk)
    causal: bool = False
    window: int | None = None
    scale: float | None = None  # None: 1 / sqrt(D)
    softcap: float | None = None
    dropout_p: float = 0.0
    q_offset: int = 0
    kv_lens: torch.Tensor | None = None  # (B,) int

    def __post_init__(self) -> None:
        dims = Q_SPEC.check(self.q)
        K_SPEC.check(self.k, dims)
        V_SPEC.check(self.v, dims)
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
        if self.q_offset < 0:
            raise ValueError(f"q_offset must be >= 0, got {self.q_offset}")

    def features(self) -> dict[str, bool]:
        """Which boolean kernel capabilities (fields of :class:`KernelCaps`) this call needs."""
        return {
            "allow_mask": self.allow_mask is not None,
            "causal": self.causal,
            "q_offset": self.q_offset != 0 and (self.causal or self.window is not None),
            "gqa": self.gqa,
            "window": self.window is not None,
            "softcap": self.softcap is not None,
            "dropout": self.dropout_p > 0,
            "backward": self.needs_backward,
            "kv_lens": self.kv_lens is not None,
        }

    @property
    def head_dim(self) -> int:
        return self.q.shape[-1]

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
    """What a kernel declares it can serve. :meth:`missing` lists what a call needs beyond it."""

    dtypes: frozenset[str]
    devices: frozenset[str]
    allow_mask: bool = False
    causal: bool = False
    q_offset: bool = False  # causal/window with a query offset (cached decoding, Tq != Tk)
    gqa: bool = False
    window: bool = False
    softcap: bool = False
    dropout: bool = False
    backward: bool = False
    kv_lens: bool = False
    head_dims: frozenset[int] | None = None  # None: any head dim

    def missing(self, call: AttentionCall) -> list[str]:
        """The capabilities ``call`` needs that this kernel lacks, each as a short phrase."""
        out = []
        if dtype_name(call.q) not in self.dtypes:
            out.append(f"dtype {dtype_name(call.q)} (supports {', '.join(sorted(self.dtypes))})")
        if call.device_type not in self.devices:
            out.append(f"device {call.device_type} (supports {', '.join(sorted(self.devices))})")
        if self.head_dims is not None and call.head_dim not in self.head_dims:
            out.append(f"head dim {call.head_dim} (supports {sorted(self.head_dims)})")
        out.extend(name for name, needed in call.features().items() if needed and not getattr(self, name))
        return out


class AttentionKernel(Protocol):
    """A kernel takes the call and returns the output ``(B, Hq, Tq, D)`` in the dtype of ``q``."""

    def __call__(self, call: AttentionCall) -> torch.Tensor: ...
