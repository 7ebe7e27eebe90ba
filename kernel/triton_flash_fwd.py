"""The forward Triton kernel of ``triton_flash``: online softmax over key tiles, one program per query tile.

Each program holds a ``(BLOCK_M, D)`` tile of queries of one (row, query head) and streams the keys and values
of that head's kv head (GQA/MQA read the shared head; nothing is repeated) in ``BLOCK_N`` tiles, keeping a
running maximum ``m``, a running sum ``l`` and an unnormalised output accumulator (FlashAttention-2). Only the
key tiles that the causal rule, the window and the key length leave visible are visited. Scores are kept in
base 2 (``exp2`` is the native instruction); the log-sum-exp handed to the backward is in natural log.

The visibility rule (``specs.attention``) is written once, in :func:`visible`, and the backward kernels reuse it
together with :func:`scores`, so forward and backward cannot disagree about a masked key.
"""

from __future__ import annotations

import triton
import triton.language as tl

LOG2E: tl.constexpr = tl.constexpr(1.4426950408889634)
LN2: tl.constexpr = tl.constexpr(0.6931471805599453)


@triton.jit
def mma(a, b, PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """``a @ b`` accumulated in float32. ``UPCAST`` (set for bfloat16 under the interpreter only) widens the
    operands first: Triton's interpreter multiplies bfloat16 as the raw uint16 bits. The widening is exact, so
    the products match a GPU's bfloat16 tensor cores (exact products, float32 sums)."""
    if UPCAST:
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    return tl.dot(a, b, input_precision=PRECISION)


@triton.jit
def tile_and_head(length, BLOCK: tl.constexpr, LAST_FIRST: tl.constexpr):
    """This program's tile start along ``length`` and its flat (batch, head) index. The grid is one flat axis
    (CUDA caps the second at 65535, and B*H can pass that), the tiles of one head adjacent; ``LAST_FIRST``
    starts from the last tile, which under the causal rule holds the most work (better tail balance)."""
    tiles = tl.cdiv(length, BLOCK)
    pid = tl.program_id(0)
    tile = pid % tiles
    if LAST_FIRST:
        tile = tiles - 1 - tile
    return tile * BLOCK, (pid // tiles).to(tl.int64)  # int64: batch/head offsets can pass 2**31 elements


@triton.jit
def visible(q_pos, k_idx, kv_len, window, CAUSAL: tl.constexpr, WINDOW: tl.constexpr):
    """Boolean ``(len(q_pos), len(k_idx))``: may the query at absolute position ``q_pos`` see key ``k_idx``."""
    ok = k_idx[None, :] < kv_len
    if CAUSAL:
        ok = ok & (k_idx[None, :] <= q_pos[:, None])
    if WINDOW:
        ok = ok & (k_idx[None, :] > q_pos[:, None] - window)
        if not CAUSAL:
            ok = ok & (k_idx[None, :] < q_pos[:, None] + window)
    return ok


@triton.jit
def scores(q, k, scale, softcap, SOFTCAP: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """Logits in base-2 units, ``(BLOCK_M, BLOCK_N)`` float32, and the soft-capped tanh (for its derivative)."""
    s = mma(q, tl.trans(k), PRECISION, UPCAST) * scale
    t = s  # unused without SOFTCAP; the backward only reads it when SOFTCAP is set
    if SOFTCAP:
        # tanh(x) = 1 - 2 / (exp(2x) + 1): exact at both saturations, and portable (no libdevice call).
        t = 1.0 - 2.0 / (tl.exp(2.0 * s / softcap) + 1.0)
        s = softcap * t
    return s * LOG2E, t


@triton.jit
def row_bounds(off_b, kv_lens_ptr, q_offset_ptr, q_offset, Tk, HAS_KV_LENS: tl.constexpr,
               PER_ROW_OFFSET: tl.constexpr):
    """The key length and query offset of batch row ``off_b``."""
    kv_len = Tk
    if HAS_KV_LENS:
        kv_len = tl.minimum(tl.load(kv_lens_ptr + off_b).to(tl.int32), Tk)
    offset = q_offset
    if PER_ROW_OFFSET:
        offset = tl.load(q_offset_ptr + off_b).to(tl.int32)
    return kv_len, offset


@triton.jit
def key_range(first_pos, last_pos, kv_len, window, CAUSAL: tl.constexpr, WINDOW: tl.constexpr,
              BLOCK_N: tl.constexpr):
    """``[lo, hi)`` of key indices visible from query positions ``first_pos..last_pos``; ``lo`` tile-aligned."""
    hi = kv_len
    lo = 0
    if CAUSAL:
        hi = tl.minimum(hi, last_pos + 1)
    if WINDOW:
        lo = tl.maximum(first_pos - window + 1, 0)
        lo = (lo // BLOCK_N) * BLOCK_N
        if not CAUSAL:
            hi = tl.minimum(hi, last_pos + window)
    return lo, hi


@triton.jit
def unmasked_range(first_pos, last_pos, lo, hi, kv_len, window, CAUSAL: tl.constexpr, WINDOW: tl.constexpr,
                   BLOCK_N: tl.constexpr):
    """``[full_lo, full_hi)``, tile-aligned inside ``[lo, hi)``: the key tiles that every query at positions
    ``first_pos..last_pos`` sees whole (and that lie inside the keys), which skip the mask. Under the causal rule
    that is all but the diagonal tiles; without a rule, all but a ragged last tile."""
    start = lo
    end = kv_len
    if CAUSAL:
        end = tl.minimum(end, first_pos + 1)
    if WINDOW:
        start = tl.maximum(start, last_pos - window + 1)
        if not CAUSAL:
            end = tl.minimum(end, first_pos + window)
    full_lo = tl.minimum(tl.cdiv(start, BLOCK_N) * BLOCK_N, hi)
    full_hi = tl.maximum((end // BLOCK_N) * BLOCK_N, full_lo)  # end <= hi, so this stays inside [lo, hi)
    return full_lo, full_hi


@triton.jit
def load_kv_tile(k_base, v_base, k_idx, offs_d, skt, svt, Tk, MASKED: tl.constexpr):
    """The keys and values of one key tile; with ``MASKED``, rows past ``Tk`` read as zeros."""
    if MASKED:
        in_range = k_idx[:, None] < Tk
        k = tl.load(k_base + k_idx[:, None] * skt + offs_d[None, :], mask=in_range, other=0.0)
        v = tl.load(v_base + k_idx[:, None] * svt + offs_d[None, :], mask=in_range, other=0.0)
    else:
        k = tl.load(k_base + k_idx[:, None] * skt + offs_d[None, :])
        v = tl.load(v_base + k_idx[:, None] * svt + offs_d[None, :])
    return k, v


@triton.jit
def _attend(acc, l_i, m_i, q, q_pos, k_base, v_base, skt, svt, start, end, kv_len, Tk, window, scale, softcap,
            D: tl.constexpr, BLOCK_N: tl.constexpr, MASKED: tl.constexpr, CAUSAL: tl.constexpr,
            WINDOW: tl.constexpr, SOFTCAP: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """The online-softmax update over the key tiles ``start, start + BLOCK_N, ... < end``."""
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, D)
    for start_n in range(start, end, BLOCK_N):
        k_idx = start_n + offs_n
        k, v = load_kv_tile(k_base, v_base, k_idx, offs_d, skt, svt, Tk, MASKED)
        s, _ = scores(q, k, scale, softcap, SOFTCAP, PRECISION, UPCAST)
        if MASKED:
            s = tl.where(visible(q_pos, k_idx, kv_len, window, CAUSAL, WINDOW), s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        # A row that has seen no visible key yet keeps m = -inf; shifting by 0 instead avoids inf - inf.
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.exp2(s - m_safe[:, None])
        alpha = tl.exp2(m_i - m_safe)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + mma(p.to(v.dtype), v, PRECISION, UPCAST)
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def flash_fwd(
    Q, K, V, OUT, LSE, KV_LENS, Q_OFFSETS,
    sqb, sqh, sqt, skb, skh, skt, svb, svh, svt, sob, soh, sot,
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

    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, D)
    q_pos = offset + offs_m
    q_ptrs = Q + off_b * sqb + off_h * sqh + offs_m[:, None] * sqt + offs_d[None, :]
    q = tl.load(q_ptrs, mask=offs_m[:, None] < Tq, other=0.0)
    k_base = K + off_b * skb + off_kh * skh
    v_base = V + off_b * svb + off_kh * svh

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, D], dtype=tl.float32)
    first_pos = offset + start_m
    last_pos = offset + tl.minimum(start_m + BLOCK_M, Tq) - 1
    lo, hi = key_range(first_pos, last_pos, kv_len, window, CAUSAL, WINDOW, BLOCK_N)
    full_lo, full_hi = unmasked_range(first_pos, last_pos, lo, hi, kv_len, window, CAUSAL, WINDOW, BLOCK_N)
    # Masked tiles before the fully visible run (window edge), the run itself, masked tiles after it.
    acc, l_i, m_i = _attend(acc, l_i, m_i, q, q_pos, k_base, v_base, skt, svt, lo, full_lo, kv_len, Tk, window,
                            scale, softcap, D, BLOCK_N, True, CAUSAL, WINDOW, SOFTCAP, PRECISION, UPCAST)
    acc, l_i, m_i = _attend(acc, l_i, m_i, q, q_pos, k_base, v_base, skt, svt, full_lo, full_hi, kv_len, Tk,
                            window, scale, softcap, D, BLOCK_N, False, CAUSAL, WINDOW, SOFTCAP, PRECISION, UPCAST)
    acc, l_i, m_i = _attend(acc, l_i, m_i, q, q_pos, k_base, v_base, skt, svt, full_hi, hi, kv_len, Tk, window,
                            scale, softcap, D, BLOCK_N, True, CAUSAL, WINDOW, SOFTCAP, PRECISION, UPCAST)

    empty = l_i == 0.0  # no visible key: the output is zero and the backward must see p = 0 everywhere
    out = acc / tl.where(empty, 1.0, l_i)[:, None]
    lse = tl.where(empty, float("inf"), (m_i + tl.log2(tl.where(empty, 1.0, l_i))) * LN2)
    row_ok = offs_m < Tq
    o_ptrs = OUT + off_b * sob + off_h * soh + offs_m[:, None] * sot + offs_d[None, :]
    tl.store(o_ptrs, out.to(OUT.dtype.element_ty), mask=row_ok[:, None])
    tl.store(LSE + off_bh * Tq + offs_m, lse, mask=row_ok)
