"""tensor: stateless numerics for the lmplanes compute spine.

Functions only, no modules and no state: boolean allow masks and their algebra (SDPA semantics, True = may
attend), rotary embeddings (scaled linearly, NTK, dynamic NTK, Llama 3 or YaRN), sinusoidal positions, ALiBi,
soft-capping, RMS norm, drop-path, weight initialisers, and the gated delta rule (recurrent and chunked) with the
short causal convolution of linear-attention layers. Imports ``torch`` and ``specs`` only.

Position convention shared with ``specs.attention``: query ``i`` is at ``q_offset + i``, key ``j`` at ``j``.
"""

from tensor.alibi import alibi_bias, alibi_slopes
from tensor.delta_rule import delta_rule_chunked, delta_rule_recurrent, l2_normalize
from tensor.init import init_normal_, init_trunc_normal_, init_zeros_, residual_std
from tensor.masks import (
    call_allow_mask,
    causal_mask,
    combine_masks,
    document_mask,
    length_mask,
    padding_mask,
    self_visible,
    structural_mask,
    to_additive_bias,
    window_mask,
)
from tensor.ops import drop_path, rms_norm, softcap
from tensor.paged import dense_call, gather_pages
from tensor.positions import sinusoidal_positions
from tensor.rope import ROPE_SCALINGS, apply_rope, rope_attention_factor, rope_cos_sin, rope_inv_freq, rotate_half
from tensor.short_conv import causal_conv1d

__all__ = [
    "ROPE_SCALINGS",
    "alibi_bias",
    "alibi_slopes",
    "apply_rope",
    "call_allow_mask",
    "causal_conv1d",
    "causal_mask",
    "combine_masks",
    "delta_rule_chunked",
    "delta_rule_recurrent",
    "dense_call",
    "document_mask",
    "drop_path",
    "gather_pages",
    "init_normal_",
    "init_trunc_normal_",
    "init_zeros_",
    "l2_normalize",
    "length_mask",
    "padding_mask",
    "residual_std",
    "rms_norm",
    "rope_attention_factor",
    "rope_cos_sin",
    "rope_inv_freq",
    "rotate_half",
    "self_visible",
    "sinusoidal_positions",
    "softcap",
    "structural_mask",
    "to_additive_bias",
    "window_mask",
]
