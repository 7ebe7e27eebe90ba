"""The ``triton_flash`` kernel: FlashAttention-2 written in Triton, forward and backward, behind autograd.

:func:`attention` serves an :class:`specs.AttentionCall` (what :data:`kernel.caps.triton_flash_caps` declares:
causal, per-row or shared ``q_offset``, GQA/MQA, sliding window, soft-capping, key lengths, gradients);
:func:`flash_attention` is the same computation that also returns the log-sum-exp ``(B, Hq, Tq)`` (float32,
natural log, ``+inf`` for a query that sees no key).

This module imports Triton, so nothing imports it directly: the registry loads it by name on first use. With
``TRITON_INTERPRET=1`` set before that first use, the kernels run in Triton's interpreter on CPU tensors (how the
tests run on a machine without a GPU).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import triton

from kernel.triton_flash_bwd import flash_bwd_delta, flash_bwd_dkdv, flash_bwd_dq
from kernel.triton_flash_fwd import flash_fwd
from specs.attention import AttentionCall

INTERPRETED = triton.knobs.runtime.interpret  # what the @triton.jit decorations above were built with


@dataclass(frozen=True, slots=True)
class _Plan:
    """Everything but the tensors that the three kernels need, shared by forward and backward."""

    causal: bool
    window: int
    softcap: float
    scale: float
    q_offset: int
    q_offsets: torch.Tensor | None
    kv_lens: torch.Tensor | None

    def launch_args(self) -> tuple:
        return (self.q_offset, self.scale, self.softcap, self.window)

    def flags(self, dtype: torch.dtype, head_dim: int, *, backward: bool) -> dict:
        block_m, block_n, warps, stages = _tiles(head_dim, dtype, backward=backward)
        return {
            "D": head_dim, "BLOCK_M": block_m, "BLOCK_N": block_n,
            "CAUSAL": self.causal, "WINDOW": self.window > 0, "SOFTCAP": self.softcap > 0,
            "HAS_KV_LENS": self.kv_lens is not None, "PER_ROW_OFFSET": self.q_offsets is not None,
            # float32 inputs get float32 products (tf32 would break the oracle's 1e-5); 16-bit ones need no choice
            "PRECISION": "ieee" if dtype == torch.float32 else None,
            "UPCAST": INTERPRETED and dtype == torch.bfloat16,
            "num_warps": warps, "num_stages": stages,
        }


def _tiles(head_dim: int, dtype: torch.dtype, *, backward: bool) -> tuple[int, int, int, int]:
    """``(BLOCK_M, BLOCK_N, num_warps, num_stages)``. The interpreter runs small tiles so that tests at tiny
    shapes cross tile edges. On a GPU, FlashAttention-2's usual shapes, untuned (no GPU has run this yet) but
    sized to stay near 100 KB of shared memory (A100: 164 KB) at head dim 128: the backward streams two tiles
    (q and dO, or k and v) per step, so its tiles are smaller, and float32 halves them again."""
    if INTERPRETED:
        return 16, 16, 1, 1
    block_m, block_n = (64, 64) if backward else (128, 64)
    if dtype == torch.float32:
        block_m, block_n = block_m // 2, block_n // 2
    warps = 4 if head_dim <= 64 else 8
    stages = 3 if (head_dim <= 64 and not backward) else 2
    return block_m, block_n, warps, stages


def _rows(t: torch.Tensor) -> torch.Tensor:
    """``t`` with unit stride along the head dim (the kernels take the other three strides)."""
    return t if t.stride(-1) == 1 else t.contiguous()


def _strides(t: torch.Tensor) -> tuple[int, int, int]:
    return t.stride(0), t.stride(1), t.stride(2)


def _forward(q, k, v, plan: _Plan) -> tuple[torch.Tensor, torch.Tensor]:
    batch, hq, tq, d = q.shape
    hkv, tk = k.shape[1], k.shape[2]
    out = torch.empty_like(q, memory_format=torch.contiguous_format)
    lse = torch.empty(batch, hq, tq, device=q.device, dtype=torch.float32)
    flags = plan.flags(q.dtype, d, backward=False)
    grid = (triton.cdiv(tq, flags["BLOCK_M"]) * batch * hq,)
    flash_fwd[grid](
        q, k, v, out, lse, plan.kv_lens if plan.kv_lens is not None else q,
        plan.q_offsets if plan.q_offsets is not None else q,
        *_strides(q), *_strides(k), *_strides(v), *_strides(out),
        hq, hq // hkv, tq, tk, *plan.launch_args(), **flags,
    )
    return out, lse


def _backward(do, q, k, v, out, lse, plan: _Plan) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    batch, hq, tq, d = q.shape
    hkv, tk = k.shape[1], k.shape[2]
    flags = plan.flags(q.dtype, d, backward=True)
    kv_lens = plan.kv_lens if plan.kv_lens is not None else q
    q_offsets = plan.q_offsets if plan.q_offsets is not None else q

    delta = torch.empty_like(lse)
    grid_q = (triton.cdiv(tq, flags["BLOCK_M"]) * batch * hq,)
    flash_bwd_delta[grid_q](out, do, delta, *_strides(out), *_strides(do), hq, tq, D=d, BLOCK_M=flags["BLOCK_M"])

    dq = torch.empty_like(q, memory_format=torch.contiguous_format)
    dk = torch.empty_like(k, memory_format=torch.contiguous_format)
    dv = torch.empty_like(v, memory_format=torch.contiguous_format)
    common = (*_strides(q), *_strides(k), *_strides(v), *_strides(do))
    flash_bwd_dkdv[(triton.cdiv(tk, flags["BLOCK_N"]) * batch * hkv,)](
        q, k, v, do, lse, delta, dk, dv, kv_lens, q_offsets, *common, *_strides(dk), *_strides(dv),
        hq, hkv, hq // hkv, tq, tk, *plan.launch_args(), **flags,
    )
    flash_bwd_dq[grid_q](
        q, k, v, do, lse, delta, dq, kv_lens, q_offsets, *common, *_strides(dq),
        hq, hq // hkv, tq, tk, *plan.launch_args(), **flags,
    )
    return dq, dk, dv


class _FlashAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, plan: _Plan):
        out, lse = _forward(q, k, v, plan)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.plan = plan
        ctx.mark_non_differentiable(lse)
        return out, lse

    @staticmethod
    def backward(ctx, grad_out, _grad_lse):
        q, k, v, out, lse = ctx.saved_tensors
        dq, dk, dv = _backward(_rows(grad_out), q, k, v, out, lse, ctx.plan)
        return dq, dk, dv, None


def flash_attention(call: AttentionCall) -> tuple[torch.Tensor, torch.Tensor]:
    """``(output (B, Hq, Tq, D), log-sum-exp (B, Hq, Tq))`` of ``call``; differentiable in q, k and v.

    The call must be one :data:`kernel.caps.triton_flash_caps` covers (the registry checks that; a direct caller
    gets a ValueError for an allow mask, dropout or a block table).
    """
    if call.allow_mask is not None or call.dropout_p > 0 or call.block_table is not None:
        raise ValueError("triton_flash serves no allow mask, dropout or block table; resolve the call instead")
    per_row = isinstance(call.q_offset, torch.Tensor)
    # q_offset only moves the causal and window rules; otherwise it changes nothing and is dropped.
    positional = call.causal or call.window is not None
    plan = _Plan(
        causal=call.causal,
        window=call.window or 0,
        softcap=call.softcap or 0.0,
        scale=call.scale if call.scale is not None else 1.0 / math.sqrt(call.head_dim),
        q_offset=call.q_offset if (positional and not per_row) else 0,  # type: ignore[arg-type]
        q_offsets=call.q_offset.contiguous() if (positional and per_row) else None,  # type: ignore[union-attr]
        kv_lens=call.kv_lens.contiguous() if call.kv_lens is not None else None,
    )
    out, lse = _FlashAttention.apply(_rows(call.q), _rows(call.k), _rows(call.v), plan)
    return out, lse


def attention(call: AttentionCall) -> torch.Tensor:
    return flash_attention(call)[0]
