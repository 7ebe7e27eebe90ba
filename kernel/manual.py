"""The ``manual`` kernel: attention written out in plain PyTorch, in float32, with every feature.

It is the numerical oracle every other kernel is tested against, so it favours clarity and accuracy over
speed: K/V heads are repeated for GQA, scores are materialised, and the softmax runs in float32 whatever
the input dtype.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from kernel.caps import torch_kernel_caps
from specs.attention import AttentionCall
from tensor.masks import combine_masks, length_mask, structural_mask
from tensor.ops import softcap

CAPS = torch_kernel_caps()


def attention(call: AttentionCall) -> torch.Tensor:
    q, k, v = call.q, call.k, call.v
    n_q_heads, tq, head_dim = q.shape[1], q.shape[2], q.shape[3]
    groups = n_q_heads // k.shape[1]
    compute = torch.float64 if q.dtype == torch.float64 else torch.float32
    k = k.to(compute).repeat_interleave(groups, dim=1)  # (B, Hq, Tk, D): query head h reads kv head h // groups
    v = v.to(compute).repeat_interleave(groups, dim=1)
    scale = call.scale if call.scale is not None else 1.0 / math.sqrt(head_dim)

    scores = (q.to(compute) @ k.transpose(-2, -1)) * scale  # (B, Hq, Tq, Tk)
    if call.softcap is not None:
        scores = softcap(scores, call.softcap)
    allow = combine_masks(
        structural_mask(tq, k.shape[2], causal=call.causal, window=call.window, q_offset=call.q_offset,
                        device=q.device),
        call.allow_mask,
        length_mask(call.kv_lens, k.shape[2]) if call.kv_lens is not None else None,
    )
    if allow is not None:
        # A finite fill keeps fully masked rows free of NaN (in values and gradients); they are zeroed below.
        scores = scores.masked_fill(~allow, torch.finfo(compute).min)
    probs = torch.softmax(scores, dim=-1)
    if allow is not None:
        probs = probs * allow.any(dim=-1, keepdim=True)
    if call.dropout_p > 0:
        probs = F.dropout(probs, p=call.dropout_p)
    return (probs @ v).to(q.dtype)
