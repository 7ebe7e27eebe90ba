"""Attention layers: self-attention (MHA/GQA/MQA, RoPE, QK-norm, soft-capping, sliding window),
cross-attention, Gated DeltaNet linear attention, and the caches: :class:`specs.KVCache` implementations
(contiguous, paged) and the hybrid cache of models that mix both kinds of layer.

Kernels are resolved by name through :mod:`kernel.registry`; no layer branches on a back-end.
"""

from attn.context import AttentionContext
from attn.cross_attention import CrossAttention
from attn.gated_deltanet import GatedDeltaNet
from attn.hybrid_cache import HybridCache
from attn.kv_cache import StaticKVCache
from attn.paged_kv_cache import PagedKVCache
from attn.self_attention import SelfAttention

__all__ = [
    "AttentionContext",
    "CrossAttention",
    "GatedDeltaNet",
    "HybridCache",
    "PagedKVCache",
    "SelfAttention",
    "StaticKVCache",
]
