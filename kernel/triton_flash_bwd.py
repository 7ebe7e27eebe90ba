"""The backward Triton kernels of ``triton_flash`` (FlashAttention-2 recomputation).

Nothing of size ``Tq x Tk`` was saved: each kernel recomputes the probabilities of its tiles from the queries,
the keys and the log-sum-exp of the forward, ``p = exp(s - lse)``. With ``delta = rowsum(dO * O)`` (computed
once by :func:`flash_bwd_delta`) the score gradient is ``ds = p * (dO @ v^T - delta)``.

* :func:`flash_bwd_dkdv`: one program per key tile of one kv head; it walks the query tiles of every query
  head of its GQA group, so ``dK``/``dV`` of a shared head are summed in registers, without atomics (the result
  does not depend on scheduling).
* :func:`flash_bwd_dq`: one program per query tile, walking the key tiles like the forward.
"""

from __future__ import annotations

import triton
import triton.language as tl

from kernel.triton_flash_fwd import (
    LOG2E,
    key_range,
    load_kv_tile,
    mma,
    row_bounds,
    scores,
    tile_and_head,
    unmasked_range,
    visible,
)


@triton.jit
def flash_bwd_delta(OUT, DO, DELTA, sob, soh, sot, sdob, sdoh, sdot, Hq, Tq,
                    D: tl.constexpr, BLOCK_M: tl.constexpr):
    start_m, off_bh = tile_and_head(Tq, BLOCK_M, False)
    off_b = off_bh // Hq
    off_h = off_bh % Hq
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, D)
    row_ok = offs_m[:, None] < Tq
    o = tl.load(OUT + off_b * sob + off_h * soh + offs_m[:, None] * sot + offs_d[None, :], mask=row_ok, other=0.0)
    do = tl.load(DO + off_b * sdob + off_h * sdoh + offs_m[:, None] * sdot + offs_d[None, :], mask=row_ok, other=0.0)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
    tl.store(DELTA + off_bh * Tq + offs_m, delta, mask=offs_m < Tq)


@triton.jit
def _probs_and_dscores(q, k, v, do, lse, delta, q_pos, k_idx, kv_len, window, scale, softcap,
                       MASKED: tl.constexpr, CAUSAL: tl.constexpr, WINDOW: tl.constexpr, SOFTCAP: tl.constexpr,
                       PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """``p`` and ``ds`` (gradient of the pre-cap, post-scale logits) of one ``(BLOCK_M, BLOCK_N)`` tile."""
    s, t = scores(q, k, scale, softcap, SOFTCAP, PRECISION, UPCAST)
    p = tl.exp2(s - lse[:, None] * LOG2E)
    if MASKED:
        p = tl.where(visible(q_pos, k_idx, kv_len, window, CAUSAL, WINDOW), p, 0.0)
    dp = mma(do, tl.trans(v), PRECISION, UPCAST)
    ds = p * (dp - delta[:, None])
    if SOFTCAP:
        ds = ds * (1.0 - t * t)
    return p, ds


@triton.jit
def flash_bwd_dkdv(
    Q, K, V, DO, LSE, DELTA, DK, DV, KV_LENS, Q_OFFSETS,
    sqb, sqh, sqt, skb, skh, skt, svb, svh, svt, sdob, sdoh, sdot, sdkb, sdkh, sdkt, sdvb, sdvh, sdvt,
    Hq, Hkv, groups, Tq, Tk, q_offset, scale, softcap, window,
    D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    CAUSAL: tl.constexpr, WINDOW: tl.constexpr, SOFTCAP: tl.constexpr,
    HAS_KV_LENS: tl.constexpr, PER_ROW_OFFSET: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr,
):
    start_n, off_bkh = tile_and_head(Tk, BLOCK_N, False)  # the first key tiles have the most causal work
    off_b = off_bkh // Hkv
    off_kh = off_bkh % Hkv
    kv_len, offset = row_bounds(off_b, KV_LENS, Q_OFFSETS, q_offset, Tk, HAS_KV_LENS, PER_ROW_OFFSET)

    offs_m = tl.arange(0, BLOCK_M)
    k_idx = start_n + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, D)
    key_ok = k_idx[:, None] < Tk
    k = tl.load(K + off_b * skb + off_kh * skh + k_idx[:, None] * skt + offs_d[None, :], mask=key_ok, other=0.0)
    v = tl.load(V + off_b * svb + off_kh * svh + k_idx[:, None] * svt + offs_d[None, :], mask=key_ok, other=0.0)
    dk = tl.zeros([BLOCK_N, D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, D], dtype=tl.float32)

    # The query rows (absolute positions) that can see a key of this tile; none when the tile is all padding.
    last_key = tl.minimum(start_n + BLOCK_N, kv_len) - 1
    first_pos = 0
    end_pos = offset + Tq
    if CAUSAL:
        first_pos = start_n
    if WINDOW:
        end_pos = tl.minimum(end_pos, last_key + window)
        if not CAUSAL:
            first_pos = start_n - window + 1
    lo = tl.maximum(first_pos - offset, 0)
    lo = (lo // BLOCK_M) * BLOCK_M
    hi = tl.minimum(end_pos - offset, Tq)
    if start_n >= kv_len:
        hi = lo

    for g in range(0, groups):
        off_h = off_kh * groups + g
        q_base = Q + off_b * sqb + off_h * sqh
        do_base = DO + off_b * sdob + off_h * sdoh
        row_base = (off_b * Hq + off_h) * Tq
        for start_m in range(lo, hi, BLOCK_M):
            rows = start_m + offs_m
            row_ok = rows < Tq
            q = tl.load(q_base + rows[:, None] * sqt + offs_d[None, :], mask=row_ok[:, None], other=0.0)
            do = tl.load(do_base + rows[:, None] * sdot + offs_d[None, :], mask=row_ok[:, None], other=0.0)
            lse = tl.load(LSE + row_base + rows, mask=row_ok, other=float("inf"))
            delta = tl.load(DELTA + row_base + rows, mask=row_ok, other=0.0)
            p, ds = _probs_and_dscores(q, k, v, do, lse, delta, offset + rows, k_idx, kv_len, window, scale,
                                       softcap, True, CAUSAL, WINDOW, SOFTCAP, PRECISION, UPCAST)
            dv += mma(tl.trans(p).to(do.dtype), do, PRECISION, UPCAST)
            dk += mma(tl.trans(ds).to(q.dtype), q, PRECISION, UPCAST)

    store_ok = k_idx[:, None] < Tk
    tl.store(DK + off_b * sdkb + off_kh * sdkh + k_idx[:, None] * sdkt + offs_d[None, :],
             (dk * scale).to(DK.dtype.element_ty), mask=store_ok)
    tl.store(DV + off_b * sdvb + off_kh * sdvh + k_idx[:, None] * sdvt + offs_d[None, :],
             dv.to(DV.dtype.element_ty), mask=store_ok)


@triton.jit
def _dq_tiles(dq, q, do, lse, delta, q_pos, k_base, v_base, skt, svt, start, end, kv_len, Tk, window, scale,
              softcap, D: tl.constexpr, BLOCK_N: tl.constexpr, MASKED: tl.constexpr, CAUSAL: tl.constexpr,
              WINDOW: tl.constexpr, SOFTCAP: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """``dq`` accumulated over the key tiles ``start, start + BLOCK_N, ... < end``."""
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, D)
    for start_n in range(start, end, BLOCK_N):
        k_idx = start_n + offs_n
        k, v = load_kv_tile(k_base, v_base, k_idx, offs_d, skt, svt, Tk, MASKED)
        _, ds = _probs_and_dscores(q, k, v, do, lse, delta, q_pos, k_idx, kv_len, window, scale, softcap,
                                   MASKED, CAUSAL, WINDOW, SOFTCAP, PRECISION, UPCAST)
        dq += mma(ds.to(k.dtype), k, PRECISION, UPCAST)
    return dq


@triton.jit
def flash_bwd_dq(
    Q, K, V, DO, LSE, DELTA, DQ, KV_LENS, Q_OFFSETS,
    sqb, sqh, sqt, skb, skh, skt, svb, svh, svt, sdob, sdoh, sdot, sdqb, sdqh, sdqt,
    Hq, groups, Tq, Tk, q_offset, scale, softcap, window,
    D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    CAUSAL: tl.constexpr, WINDOW: tl.constexpr, SOFTCAP: tl.constexpr,
    HAS_KV_LENS: tl.constexpr, PER_ROW_OFFSET: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr,
):
    start_m, off_bh = tile_and_head(Tq, BLOCK_M, True)
    off_b = off_bh // Hq
    off_h = off_bh % Hq
    off_kh = off_h // groups
    kv_len, offset = row_bounds(off_b, KV_LENS, Q_OFFSETS, q_offset, Tk, HAS_KV_LENS, PER_ROW_OFFSET)

    rows = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, D)
    row_ok = rows < Tq
    q = tl.load(Q + off_b * sqb + off_h * sqh + rows[:, None] * sqt + offs_d[None, :], mask=row_ok[:, None], other=0.0)
    do = tl.load(DO + off_b * sdob + off_h * sdoh + rows[:, None] * sdot + offs_d[None, :], mask=row_ok[:, None],
                 other=0.0)
    lse = tl.load(LSE + off_bh * Tq + rows, mask=row_ok, other=float("inf"))
    delta = tl.load(DELTA + off_bh * Tq + rows, mask=row_ok, other=0.0)
    k_base = K + off_b * skb + off_kh * skh
    v_base = V + off_b * svb + off_kh * svh
    dq = tl.zeros([BLOCK_M, D], dtype=tl.float32)

    # The forward's three runs of key tiles: masked, fully visible, masked.
    first_pos = offset + start_m
    last_pos = offset + tl.minimum(start_m + BLOCK_M, Tq) - 1
    lo, hi = key_range(first_pos, last_pos, kv_len, window, CAUSAL, WINDOW, BLOCK_N)
    full_lo, full_hi = unmasked_range(first_pos, last_pos, lo, hi, kv_len, window, CAUSAL, WINDOW, BLOCK_N)
    q_pos = offset + rows
    dq = _dq_tiles(dq, q, do, lse, delta, q_pos, k_base, v_base, skt, svt, lo, full_lo, kv_len, Tk, window, scale,
                   softcap, D, BLOCK_N, True, CAUSAL, WINDOW, SOFTCAP, PRECISION, UPCAST)
    dq = _dq_tiles(dq, q, do, lse, delta, q_pos, k_base, v_base, skt, svt, full_lo, full_hi, kv_len, Tk, window,
                   scale, softcap, D, BLOCK_N, False, CAUSAL, WINDOW, SOFTCAP, PRECISION, UPCAST)
    dq = _dq_tiles(dq, q, do, lse, delta, q_pos, k_base, v_base, skt, svt, full_hi, hi, kv_len, Tk, window, scale,
                   softcap, D, BLOCK_N, True, CAUSAL, WINDOW, SOFTCAP, PRECISION, UPCAST)

    tl.store(DQ + off_b * sdqb + off_h * sdqh + rows[:, None] * sdqt + offs_d[None, :],
             (dq * scale).to(DQ.dtype.element_ty), mask=row_ok[:, None])
