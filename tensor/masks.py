"""Boolean allow masks and their algebra, with PyTorch SDPA semantics: ``True`` = the query may attend.

Positions follow ``specs.attention``: query ``i`` sits at absolute position ``q_offset + i`` and key ``j`` at
position ``j``. With ``q_offset == Tk - Tq`` the queries are the last ``Tq`` tokens of the key sequence
(bottom-right alignment), which is what decoding against a KV cache needs; SDPA's own ``is_causal`` is the
``q_offset == 0`` (top-left) case.

Every mask broadcasts to ``(B, H, Tq, Tk)``: structural masks are ``(Tq, Tk)``, per-batch masks carry
singleton head (and query) axes, so ``combine_masks`` can AND any of them together.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from specs.attention import AttentionCall


def _query_key_positions(
    tq: int, tk: int, q_offset: int | Tensor, device: torch.device | str | None
) -> tuple[Tensor, Tensor]:
    """Absolute positions as a broadcastable pair: queries ``(Tq, 1)`` (``(B, 1, Tq, 1)`` for per-row offsets),
    keys ``(Tk,)``."""
    if tq < 0 or tk < 0:
        raise ValueError(f"tq and tk must be >= 0, got tq={tq}, tk={tk}")
    if isinstance(q_offset, Tensor):
        if q_offset.dim() != 1 or q_offset.dtype.is_floating_point or q_offset.dtype == torch.bool:
            raise ValueError(f"a per-row q_offset must be a (B,) integer tensor, got {q_offset.dtype} "
                             f"of shape {list(q_offset.shape)}")
        device = q_offset.device
        q_pos = (q_offset[:, None] + torch.arange(tq, device=device))[:, None, :, None]
        return q_pos, torch.arange(tk, device=device)
    if q_offset < 0:
        raise ValueError(f"q_offset must be >= 0, got {q_offset}")
    q_pos = torch.arange(q_offset, q_offset + tq, device=device).unsqueeze(-1)
    return q_pos, torch.arange(tk, device=device)


def causal_mask(
    tq: int, tk: int, *, q_offset: int | Tensor = 0, device: torch.device | str | None = None
) -> Tensor:
    """``(Tq, Tk)`` bool (``(B, 1, Tq, Tk)`` for a per-row ``q_offset``): key ``j`` is allowed for query ``i``
    iff ``j <= q_offset + i``."""
    q_pos, k_pos = _query_key_positions(tq, tk, q_offset, device)
    return k_pos <= q_pos


def window_mask(
    tq: int,
    tk: int,
    window: int,
    *,
    q_offset: int | Tensor = 0,
    causal: bool = True,
    device: torch.device | str | None = None,
) -> Tensor:
    """``(Tq, Tk)`` bool sliding-window mask (``(B, 1, Tq, Tk)`` for a per-row ``q_offset``): a query sees
    ``window`` keys, itself included.

    With ``p = q_offset + i``: allowed iff ``p - window < j``, and ``j <= p`` when ``causal``; otherwise the
    band is symmetric, ``j < p + window``.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    q_pos, k_pos = _query_key_positions(tq, tk, q_offset, device)
    allowed = k_pos > q_pos - window
    upper = k_pos <= q_pos if causal else k_pos < q_pos + window
    return allowed & upper


def structural_mask(
    tq: int,
    tk: int,
    *,
    causal: bool,
    window: int | None,
    q_offset: int | Tensor = 0,
    device: torch.device | str | None = None,
) -> Tensor | None:
    """The mask implied by ``causal`` and ``window``, or ``None`` when neither restricts anything."""
    if window is not None:
        return window_mask(tq, tk, window, q_offset=q_offset, causal=causal, device=device)
    if causal:
        return causal_mask(tq, tk, q_offset=q_offset, device=device)
    return None


def call_allow_mask(call: AttentionCall) -> Tensor | None:
    """Everything that restricts an attention call (causal/window rule, its allow mask, its key lengths) as
    one allow mask broadcastable to ``(B, Hq, Tq, Tk)``, or ``None`` when every key is visible. For kernels that
    take a dense mask; the call must not be paged (gather it first)."""
    if call.block_table is not None:
        raise ValueError("call_allow_mask needs dense keys/values; gather the pages first (tensor.gather_pages)")
    tq, tk = call.q.shape[2], call.k.shape[2]
    return combine_masks(
        structural_mask(tq, tk, causal=call.causal, window=call.window, q_offset=call.q_offset, device=call.q.device),
        call.allow_mask,
        length_mask(call.kv_lens, tk) if call.kv_lens is not None else None,
    )


def padding_mask(key_padding_mask: Tensor) -> Tensor:
    """``(B, Tk)`` bool with ``True`` = padding (the ``specs.Batch`` convention) -> ``(B, 1, 1, Tk)`` allow mask.

    The polarity flips here, once: everything downstream speaks "allow".
    """
    if key_padding_mask.dtype != torch.bool or key_padding_mask.dim() != 2:
        raise ValueError(
            f"key_padding_mask must be a (B, Tk) bool tensor, got {key_padding_mask.dtype} of shape "
            f"{list(key_padding_mask.shape)}"
        )
    return (~key_padding_mask)[:, None, None, :]


def length_mask(kv_lens: Tensor, tk: int) -> Tensor:
    """``(B,)`` valid key counts -> ``(B, 1, 1, Tk)`` allow mask: key ``j`` of row ``b`` is real iff ``j < kv_lens[b]``."""
    if kv_lens.dim() != 1 or kv_lens.dtype.is_floating_point or kv_lens.dtype == torch.bool:
        raise ValueError(f"kv_lens must be a (B,) integer tensor, got {kv_lens.dtype} of shape {list(kv_lens.shape)}")
    return (torch.arange(tk, device=kv_lens.device) < kv_lens[:, None])[:, None, None, :]


def document_mask(q_document_ids: Tensor, k_document_ids: Tensor | None = None) -> Tensor:
    """``(B, 1, Tq, Tk)`` allow mask for packed sequences: a query attends only to keys of its own document.

    ``q_document_ids`` is ``(B, Tq)`` and ``k_document_ids`` ``(B, Tk)`` (defaults to the query ids, i.e.
    self-attention). Combine with ``causal_mask`` for causal packing.
    """
    k_document_ids = q_document_ids if k_document_ids is None else k_document_ids
    if q_document_ids.dim() != 2 or k_document_ids.dim() != 2:
        raise ValueError(
            f"document ids must be (B, T), got {list(q_document_ids.shape)} and {list(k_document_ids.shape)}"
        )
    return q_document_ids[:, None, :, None] == k_document_ids[:, None, None, :]


def combine_masks(*masks: Tensor | None) -> Tensor | None:
    """Logical AND of allow masks with broadcasting; ``None`` (no restriction) is skipped.

    Returns ``None`` when every argument is ``None``, so callers can hand the result straight to a kernel.
    """
    present = [m for m in masks if m is not None]
    for mask in present:
        # Additive float masks have the opposite meaning of "nonzero"; refuse them rather than guess.
        if mask.dtype != torch.bool:
            raise TypeError(f"allow masks must be bool (True = may attend), got {mask.dtype}")
    if not present:
        return None
    return functools.reduce(torch.logical_and, present)


def to_additive_bias(mask: Tensor, dtype: torch.dtype = torch.float32, *, fill: float = float("-inf")) -> Tensor:
    """Additive attention bias from an allow mask: ``0`` where allowed, ``fill`` where not.

    ``-inf`` makes a disallowed logit vanish exactly under softmax; pass a large finite ``fill`` (e.g.
    ``torch.finfo(dtype).min``) when a fully masked row must stay NaN-free.
    """
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be bool (True = may attend), got {mask.dtype}")
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask, fill)


def self_visible(allow_mask: Tensor, batch: int, tq: int, q_offset: int | Tensor = 0) -> Tensor:
    """``(B, Tq)`` bool: whether each query may attend to its own position ``q_offset + i`` (in some head).

    This is how a layer without keys (a recurrent, linear-attention one) reads which new tokens are real from
    an allow mask: padding marked in a key-padding mask (``padding_mask``) is not visible to itself.
    """
    if allow_mask.dtype != torch.bool or not 2 <= allow_mask.dim() <= 4:
        raise ValueError(f"allow_mask must be a bool tensor of 2 to 4 dims, got {allow_mask.dtype} "
                         f"of shape {list(allow_mask.shape)}")
    mask = allow_mask.reshape((1,) * (4 - allow_mask.dim()) + tuple(allow_mask.shape)).any(dim=1)  # (B?, Tq?, Tk)
    q_pos, _ = _query_key_positions(tq, 0, q_offset, mask.device)
    columns = q_pos.reshape(-1, tq).expand(batch, tq)  # absolute position of each query
    return mask.expand(batch, tq, mask.shape[-1]).gather(-1, columns[..., None]).squeeze(-1)
