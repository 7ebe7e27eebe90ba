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
from tensor.masks import combine_masks, length_mask, structural_mask

CAPS = torch_kernel_caps(softcap=False)


def attention(call: AttentionCall) -> torch.Tensor:
    q, k, v = call.q, call.k, call.v
    tq, tk = q.shape[2], k.shape[2]
    top_left_causal = call.causal and call.q_offset == 0 and tq == tk and call.window is None
    if top_left_causal and call.allow_mask is None and call.kv_lens is None:
        return F.scaled_dot_product_attention(
            q, k, v, dropout_p=call.dropout_p, is_causal=True, scale=call.scale, enable_gqa=call.gqa
        )
    allow = combine_masks(
        structural_mask(tq, tk, causal=call.causal, window=call.window, q_offset=call.q_offset, device=q.device),
        call.allow_mask,
        length_mask(call.kv_lens, tk) if call.kv_lens is not None else None,
    )
    out = F.scaled_dot_product_attention(
        q, k, v, attn_mask=allow, dropout_p=call.dropout_p, scale=call.scale, enable_gqa=call.gqa
    )
    if allow is None:
        return out
    # Some SDPA back-ends return NaN for a query that may attend to nothing; the contract says zeros.
    return torch.where(allow.any(dim=-1, keepdim=True), out, out.new_zeros(()))
