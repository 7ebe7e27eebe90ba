"""Attention layers: self-attention (MHA/GQA/MQA, RoPE, QK-norm, soft-capping, sliding window),
cross-attention, and KV-cache implementations of :class:`specs.KVCache` (contiguous, paged, and the
encoder-decoder cache that also holds the cross-attention memory, :class:`specs.MemoryKV`).

Kernels are resolved by name through :mod:`kernel.registry`; no layer branches on a back-end.
"""

from attn.context import AttentionContext
from attn.cross_attention import CrossAttention
from attn.kv_cache import StaticKVCache
from attn.paged_kv_cache import PagedKVCache
from attn.self_attention import SelfAttention
from attn.seq2seq_cache import Seq2SeqKVCache

__all__ = [
    "AttentionContext",
    "CrossAttention",
    "PagedKVCache",
    "SelfAttention",
    "Seq2SeqKVCache",
    "StaticKVCache",
]
