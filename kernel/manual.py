"""The ``manual`` kernel: attention written out in plain PyTorch, in float32, with every dense feature.

It is the numerical oracle every other kernel is tested against, so it favours clarity and accuracy over
speed: K/V heads are repeated for GQA, scores are materialised, and the softmax runs in float32 whatever
the input dtype, autocast included.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from kernel.caps import torch_kernel_caps
from specs.attention import AttentionCall
from tensor.masks import call_allow_mask
from tensor.ops import softcap

CAPS = torch_kernel_caps(lacking={"paged"})


def attention(call: AttentionCall) -> torch.Tensor:
    # Autocast would run the matmuls below in bf16/fp16 and break the float32 promise (and the finite fill).
    with torch.autocast(call.q.device.type, enabled=False):
        return _attention(call)


def _attention(call: AttentionCall) -> torch.Tensor:
    q, k, v = call.q, call.k, call.v
    groups = q.shape[1] // k.shape[1]
    compute = torch.float64 if q.dtype == torch.float64 else torch.float32
    k = k.to(compute).repeat_interleave(groups, dim=1)  # (B, Hq, Tk, D): query head h reads kv head h // groups
    v = v.to(compute).repeat_interleave(groups, dim=1)
    scale = call.scale if call.scale is not None else 1.0 / math.sqrt(q.shape[-1])

    scores = (q.to(compute) @ k.transpose(-2, -1)) * scale  # (B, Hq, Tq, Tk)
    if call.softcap is not None:
        scores = softcap(scores, call.softcap)
    allow = call_allow_mask(call)
    if allow is not None:
        # A finite fill keeps fully masked rows free of NaN (in values and gradients); they are zeroed below.
        scores = scores.masked_fill(~allow, torch.finfo(compute).min)
    probs = torch.softmax(scores, dim=-1)
    if allow is not None:
        probs = probs * allow.any(dim=-1, keepdim=True)
    if call.dropout_p > 0:
        probs = F.dropout(probs, p=call.dropout_p)
    return (probs @ v).to(q.dtype)
