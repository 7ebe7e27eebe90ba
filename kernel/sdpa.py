"""The ``sdpa`` kernel: ``torch.nn.functional.scaled_dot_product_attention``.

PyTorch picks its fastest back-end (flash, memory-efficient, cuDNN, math) for the call. Causal masking is
handed over as ``is_causal`` only when SDPA's top-left alignment is the right one (no query offset, square
scores, no other mask); otherwise the causal/window rule is built as an explicit boolean mask. SDPA has no
logit soft-capping, so calls with ``softcap`` go to another kernel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kernel.caps import torch_kernel_caps
from specs.attention import AttentionCall
from tensor.masks import call_allow_mask

CAPS = torch_kernel_caps(lacking={"softcap", "paged"})


def attention(call: AttentionCall) -> torch.Tensor:
    q, k, v = call.q, call.k, call.v
    top_left_causal = (
        call.causal and isinstance(call.q_offset, int) and call.q_offset == 0 and q.shape[2] == k.shape[2]
    )
    if top_left_causal and call.window is None and call.allow_mask is None and call.kv_lens is None:
        return F.scaled_dot_product_attention(
            q, k, v, dropout_p=call.dropout_p, is_causal=True, scale=call.scale, enable_gqa=call.gqa
        )
    allow = call_allow_mask(call)
    out = F.scaled_dot_product_attention(
        q, k, v, attn_mask=allow, dropout_p=call.dropout_p, scale=call.scale, enable_gqa=call.gqa
    )
    if allow is None:
        return out
    # Some SDPA back-ends return NaN for a query that may attend to nothing; the contract says zeros.
    return torch.where(allow.any(dim=-1, keepdim=True), out, out.new_zeros(()))
