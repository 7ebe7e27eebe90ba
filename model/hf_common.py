"""What the Hugging Face decoder families share: the options no plain pre-norm decoder has, the name lookup
through a global and a per-layer table, the config keys every exported ``config.json`` has, and per-layer
attention types (``layer_types``) both ways.

``layer_types`` lists ``"sliding_attention"`` or ``"full_attention"`` per layer; our config says the same with
``attention.window`` and ``attention.global_every`` (:meth:`specs.AttentionConfig.layer_window`), which covers
every layer pattern where the global layers are each ``global_every``-th (Gemma 2: 2, Gemma 3: 6), all layers
or none.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

from model.loading import Packed, Stacked, Where
from specs.config_io import from_dict
from specs.model_config import ModelConfig

SLIDING, FULL = "sliding_attention", "full_attention"
LAYER_NAME = re.compile(r"layers\.(\d+)\.(.+)")  # our per-layer tensor names: index, name inside the layer


def with_defaults(hf: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """``hf`` over ``defaults``; a key written as ``null`` counts as left out, as the config classes read it."""
    return {**defaults, **{key: value for key, value in hf.items() if value is not None}}


def decoder_config(name: str, dtype: str, **fields: Any) -> ModelConfig:
    """Our config for an imported pre-norm decoder with a final norm: ``fields`` are the family's own."""
    data = {
        "kind": ModelConfig.KIND,
        "version": ModelConfig.VERSION,
        "name": name,
        "architecture": "decoder",
        "residual": "pre",
        "final_norm": True,
        "dtype": dtype,
        **fields,
    }
    return from_dict(data, kind="model", source="Hugging Face config.json")


def tied_head_copy(hf_name: str, cfg: ModelConfig) -> bool:
    """Whether ``hf_name`` is the head's own copy of the tied embeddings, which some checkpoints store and
    transformers skips (the head is the embedding)."""
    return cfg.tie_embeddings and hf_name == "lm_head.weight"


def decoder_export_problems(cfg: ModelConfig, family: str) -> list[str]:
    """Why a plain pre-norm decoder of ``family`` (its name, for the messages) cannot express ``cfg``: the
    options that only other families (Gemma, Qwen, BERT) have. Each family adds its own checks."""
    att = cfg.attention
    checks = [
        (cfg.architecture != "decoder", f"architecture is {cfg.architecture!r}; {family} is a decoder"),
        (cfg.residual != "pre", f"residual is {cfg.residual!r}; {family} is pre-norm"),
        (not cfg.final_norm, f"final_norm is false; {family} always norms before the head"),
        (att.qk_norm, f"attention.qk_norm is set; {family} has no QK-norm"),
        (att.softcap is not None, f"attention.softcap is {att.softcap}; {family} has no logit soft-capping"),
        (att.window is not None, f"attention.window is {att.window}; {family} has no sliding window"),
        (att.scale is not None, f"attention.scale is {att.scale}; {family} scales by 1/sqrt(head_dim)"),
        (
            att.output_bias != att.bias,
            f"attention.out_bias differs from attention.bias; {family} has one bias setting for q, k, v and output",
        ),
        (cfg.norm_weight_offset != 0, f"norm_weight_offset is {cfg.norm_weight_offset}; {family} has none"),
        (cfg.moe is not None, f"moe is set; {family} has dense feed-forward layers only"),
        (cfg.type_vocab_size > 0, f"type_vocab_size is {cfg.type_vocab_size}; {family} has no token types"),
        (cfg.embedding_norm, f"embedding_norm is set; {family} has no norm on the embeddings"),
        (cfg.embedding_scale is not None, f"embedding_scale is set; {family} does not scale its embeddings"),
        (cfg.final_softcap is not None, f"final_softcap is set; {family} does not cap its logits"),
    ]
    return [reason for failed, reason in checks if failed]


def mapped_name(
    name: str, cfg: ModelConfig, global_names: Mapping[str, Where], layer_names: Mapping[str, Where], layers: str
) -> Where | None:
    """Where our tensor ``name`` is stored, by a table of global names and one of names relative to layer ``i``
    (stored under ``layers.format(i=i)``, e.g. ``"model.layers.{i}."``); ``None`` when neither has it. Under
    tied embeddings the head maps to the token embedding, so both of our names share one stored tensor."""
    if name == "lm_head.weight" and cfg.tie_embeddings:
        return global_names["tok_embeddings.weight"]
    if name in global_names:
        return global_names[name]
    match = LAYER_NAME.fullmatch(name)
    if match is None or match.group(2) not in layer_names:
        return None
    where, prefix = layer_names[match.group(2)], layers.format(i=match.group(1))
    if isinstance(where, Packed):
        return dataclasses.replace(where, name=prefix + where.name)
    if isinstance(where, Stacked):
        return Stacked(tuple(prefix + name for name in where.names))
    return prefix + where


def export_keys(dtype: str) -> dict[str, Any]:
    """The ``config.json`` keys every export ends with: no special tokens (a tokenizer is not part of the
    model), caching on, and the dtype under both its 4.x and 5.x names."""
    return {
        "bos_token_id": None,
        "eos_token_id": None,
        "pad_token_id": None,
        "use_cache": True,
        "torch_dtype": dtype,  # 4.x
        "dtype": dtype,  # 5.x
    }


def layer_types(cfg: ModelConfig) -> list[str]:
    """``layer_types`` for ``config.json``: each layer's attention as our config has it."""
    return [SLIDING if cfg.attention.layer_window(i) is not None else FULL for i in range(cfg.n_layers)]


def window_section(
    types: list[Any], window: Any, *, n_layers: int, max_seq_len: int, keep_sliding: bool = False
) -> dict[str, Any]:
    """``attention.window`` / ``attention.global_every`` for the per-layer ``types`` and the checkpoint's
    ``sliding_window``; a pattern our rule cannot express raises ``ValueError`` naming it. A window that spans
    ``max_seq_len`` keys hides nothing, so such layers are global, unless ``keep_sliding`` (Gemma 3's sliding
    layers rotate with their own RoPE base, so they stay sliding layers with a window of ``max_seq_len``)."""
    if len(types) != n_layers or not set(types) <= {SLIDING, FULL}:
        raise ValueError(f"layer_types must list {n_layers} of {SLIDING!r}/{FULL!r}, got {types!r}")
    sliding = [kind == SLIDING for kind in types]
    if not any(sliding):
        return {"window": None, "global_every": None}
    if not isinstance(window, int) or isinstance(window, bool) or window < 1:
        raise ValueError(f"sliding_window must be a positive integer for the sliding layers, got {window!r}")
    if window >= max_seq_len:
        if not keep_sliding:
            return {"window": None, "global_every": None}
        window = max_seq_len  # still hides nothing, but the layers stay apart (their own RoPE base)
    if all(sliding):
        return {"window": window, "global_every": None}
    for every in range(2, n_layers + 1):
        if sliding == [(i + 1) % every != 0 for i in range(n_layers)]:
            return {"window": window, "global_every": every}
    pattern = "".join("S" if s else "G" for s in sliding)
    raise ValueError(
        f"layer_types pattern {pattern} (S: sliding, G: global) is not supported; only all, none, or every "
        "k-th layer global (k = 2 for Gemma 2, 6 for Gemma 3)"
    )
