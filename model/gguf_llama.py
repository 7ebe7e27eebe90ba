"""The ``llama`` architecture of llama.cpp's GGUF files: metadata -> :class:`ModelConfig`, tensor names, and the
row order llama.cpp gives the query/key projections.

The metadata is turned into the ``config.json`` keys of Hugging Face Llama and handed to
:class:`model.hf_llama.LlamaFamily`, so both imports accept (and refuse) exactly the same models.

**Q/K rows.** Our attention (like Hugging Face Llama) rotates the two *halves* of each head: dimension ``i`` is
paired with ``i + D/2``. llama.cpp rotates *adjacent* pairs ``(2i, 2i+1)``, so its converter reorders the rows
of ``wq`` and ``wk`` (and their biases) head by head, sending row ``j * D/2 + i`` (half ``j``, index ``i``) to
row ``2i + j``. :func:`from_interleaved` puts them back; :func:`to_interleaved` is the converter's direction.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import torch

from model.hf_llama import LlamaFamily
from specs.model_config import ModelConfig

ARCHITECTURE = "llama"

# Our names -> GGUF names. Layer entries are relative to ``layers.{i}.`` / ``blk.{i}.``.
_GLOBAL = {"tok_embeddings.weight": "token_embd.weight", "norm.weight": "output_norm.weight", "lm_head.weight": "output.weight"}
_LAYER = {
    "attn_norm.weight": "attn_norm.weight",
    "mlp_norm.weight": "ffn_norm.weight",
    **{
        f"attn.w{ours}.{kind}": f"attn_{gguf}.{kind}"
        for ours, gguf in (("q", "q"), ("k", "k"), ("v", "v"), ("o", "output"))
        for kind in ("weight", "bias")
    },
    **{
        f"mlp.{ours}.{kind}": f"ffn_{gguf}.{kind}"
        for ours, gguf in (("w1", "gate"), ("w3", "up"), ("w2", "down"))
        for kind in ("weight", "bias")
    },
}
_OUR_LAYER_NAME = re.compile(r"layers\.(\d+)\.(.+)")
_ROPE_FREQS = "rope_freqs.weight"  # Llama 3.1 files: per-frequency RoPE factors, stored as a tensor

# GGUF key (after "llama.") -> Hugging Face Llama config.json key.
_KEYS = {
    "context_length": "max_position_embeddings",
    "embedding_length": "hidden_size",
    "block_count": "num_hidden_layers",
    "feed_forward_length": "intermediate_size",
    "attention.head_count": "num_attention_heads",
    "attention.head_count_kv": "num_key_value_heads",
    "attention.layer_norm_rms_epsilon": "rms_norm_eps",
    "rope.freq_base": "rope_theta",
    "attention.key_length": "head_dim",
}
_REQUIRED = ("context_length", "embedding_length", "block_count", "feed_forward_length", "attention.head_count")


def config_from_gguf(metadata: Mapping[str, Any], tensor_names: set[str], *, vocab_size: int, name: str, dtype: str) -> ModelConfig:
    """Our config for a ``llama`` GGUF (``metadata`` keyed by the full GGUF key); tied embeddings when the file
    has no ``output.weight``. Raises ``ValueError`` with one line per thing it cannot build."""
    key = f"{ARCHITECTURE}.{{}}".format
    problems = [f"metadata lacks {key(k)!r}" for k in _REQUIRED if key(k) not in metadata]
    hf: dict[str, Any] = {hf_key: metadata[key(k)] for k, hf_key in _KEYS.items() if metadata.get(key(k)) is not None}
    hf.update(vocab_size=vocab_size, tie_word_embeddings="output.weight" not in tensor_names)
    declared = metadata.get(key("vocab_size"))
    if declared is not None and declared != vocab_size:
        problems.append(f"{key('vocab_size')} is {declared}, but the token list holds {vocab_size} tokens")
    hf["attention_bias"] = any(n.endswith((".attn_q.bias", ".attn_k.bias", ".attn_v.bias")) for n in tensor_names)
    hf["mlp_bias"] = any(n.endswith((".ffn_up.bias", ".ffn_gate.bias", ".ffn_down.bias")) for n in tensor_names)
    if metadata.get(key("expert_count")):
        problems.append(f"{key('expert_count')} is {metadata[key('expert_count')]}: mixture-of-experts is not supported")
    if _ROPE_FREQS in tensor_names:
        problems.append(f"tensor {_ROPE_FREQS!r}: per-frequency RoPE factors (Llama 3.1 scaling) are not supported")
    n_heads = hf.get("num_attention_heads")
    head_dim = hf.get("head_dim") or (hf["hidden_size"] // n_heads if n_heads and "hidden_size" in hf else None)
    rotary = metadata.get(key("rope.dimension_count"))
    if rotary is not None and head_dim and rotary != head_dim:
        hf["partial_rotary_factor"] = rotary / head_dim  # LlamaFamily names what it cannot honour
    scaling = metadata.get(key("rope.scaling.type"), "none")
    if scaling != "none":
        rope: dict[str, Any] = {"rope_type": scaling, "factor": float(metadata.get(key("rope.scaling.factor"), 1.0))}
        if key("rope.scaling.original_context_length") in metadata:
            rope["original_max_position_embeddings"] = metadata[key("rope.scaling.original_context_length")]
        hf["rope_scaling"] = rope
    if problems:
        raise ValueError("\n".join(problems))
    return LlamaFamily().config_from_hf(hf, name=name, dtype=dtype)


def gguf_name(name: str, cfg: ModelConfig) -> str | None:
    """The GGUF name of our tensor ``name`` (``None``: llama.cpp has none). Under tied embeddings the head maps to
    ``token_embd.weight``, so both of our names share one stored tensor."""
    if name == "lm_head.weight" and cfg.tie_embeddings:
        return _GLOBAL["tok_embeddings.weight"]
    if name in _GLOBAL:
        return _GLOBAL[name]
    match = _OUR_LAYER_NAME.fullmatch(name)
    if match and match.group(2) in _LAYER:
        return f"blk.{match.group(1)}.{_LAYER[match.group(2)]}"
    return None


def row_order_fix(gguf: str, cfg: ModelConfig) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """What turns stored tensor ``gguf`` into ours: undo the Q/K row interleaving (``None``: nothing to undo)."""
    if gguf.endswith((".attn_q.weight", ".attn_q.bias")):
        return lambda t: from_interleaved(t, cfg.attention.n_heads)
    if gguf.endswith((".attn_k.weight", ".attn_k.bias")):
        return lambda t: from_interleaved(t, cfg.attention.kv_heads)
    return None


def to_interleaved(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """llama.cpp's converter order: per head, rows ``(half j, index i)`` -> row ``2i + j``. ``w`` is ``(H*D, ...)``."""
    head_dim = _head_dim(w, n_heads)
    return w.reshape(n_heads, 2, head_dim // 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def from_interleaved(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """The inverse of :func:`to_interleaved`: per head, row ``2i + j`` -> rows ``(half j, index i)``."""
    head_dim = _head_dim(w, n_heads)
    return w.reshape(n_heads, head_dim // 2, 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def _head_dim(w: torch.Tensor, n_heads: int) -> int:
    head_dim, rest = divmod(w.shape[0], n_heads)
    if rest or head_dim % 2:
        raise ValueError(f"{w.shape[0]} rows are not {n_heads} heads of an even size")
    return head_dim
