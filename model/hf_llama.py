"""The Llama family of Hugging Face ``transformers``: ``config.json`` <-> :class:`ModelConfig`, and tensor names.

``LlamaForCausalLM`` is a pre-norm decoder with RMSNorm, SwiGLU (``silu``), RoPE in the rotate-half layout our
attention uses (so q/k need no permutation) and MHA/GQA/MQA. Both config dialects are read: 4.x writes
``rope_theta`` and ``rope_scaling`` at the top level, 5.x nests them in ``rope_parameters`` (and names the dtype
``dtype`` rather than ``torch_dtype``). Exported configs carry both dialects. Every RoPE type but ``longrope``
is supported (``default``, ``linear``, ``dynamic``, ``llama3`` -- every Llama 3.1/3.2 checkpoint --, ``yarn``);
how their settings map, and what ``max_seq_len`` becomes, is in :mod:`model.hf_rope`.
"""

from __future__ import annotations

import re
from typing import Any

from model.hf_common import (
    decoder_config,
    decoder_export_problems,
    export_keys,
    mapped_name,
    tied_head_copy,
    with_defaults,
)
from model.hf_rope import rope_export_problems, rope_from_hf, rope_to_hf
from model.loading import Where
from specs.model_config import ModelConfig

# Our names -> Hugging Face names. Layer entries are relative to ``layers.{i}.`` / ``model.layers.{i}.``.
_GLOBAL = {
    "tok_embeddings.weight": "model.embed_tokens.weight",
    "norm.weight": "model.norm.weight",
    "lm_head.weight": "lm_head.weight",
}
_LAYER = {
    "attn_norm.weight": "input_layernorm.weight",
    "mlp_norm.weight": "post_attention_layernorm.weight",
    **{
        f"attn.w{ours}.{kind}": f"self_attn.{hf}_proj.{kind}"
        for ours, hf in (("q", "q"), ("k", "k"), ("v", "v"), ("o", "o"))
        for kind in ("weight", "bias")
    },
    **{
        f"mlp.{ours}.{kind}": f"mlp.{hf}_proj.{kind}"
        for ours, hf in (("w1", "gate"), ("w3", "up"), ("w2", "down"))
        for kind in ("weight", "bias")
    },
}
_DERIVED = re.compile(r"model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq")  # buffers some old checkpoints saved

# LlamaConfig's defaults, for keys a config.json may leave out.
_DEFAULTS: dict[str, Any] = {
    "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-6,
    "hidden_act": "silu",
    "tie_word_embeddings": False,
    "attention_bias": False,
    "mlp_bias": False,
    "attention_dropout": 0.0,
    "initializer_range": 0.02,
    "rope_theta": 10000.0,
}
_REQUIRED = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")


class LlamaFamily:
    """``model_type: llama`` (``LlamaForCausalLM``)."""

    model_type = "llama"
    architecture = "LlamaForCausalLM"
    base_prefix = "model."

    # ------------------------------------------------------------------------------------------------- import

    def config_from_hf(self, hf: dict[str, Any], *, name: str, dtype: str) -> ModelConfig:
        """Our config for a Llama ``config.json``; every key it cannot honour is named in one ``ValueError``."""
        missing = [key for key in _REQUIRED if hf.get(key) is None]
        if missing:
            raise ValueError(f"Llama config.json lacks required keys: {', '.join(missing)}")
        values = with_defaults(hf, _DEFAULTS)

        def get(key: str, default: Any = None) -> Any:
            return values.get(key, default)

        problems = []
        if get("hidden_act") != "silu":
            problems.append(f"hidden_act {get('hidden_act')!r} is not supported (Llama SwiGLU needs 'silu')")
        if get("partial_rotary_factor", 1.0) != 1.0:
            problems.append(f"partial_rotary_factor {get('partial_rotary_factor')} is not supported (only 1.0)")
        try:
            rope, max_seq_len = rope_from_hf(
                hf, max_positions=get("max_position_embeddings"), default_theta=_DEFAULTS["rope_theta"]
            )
        except ValueError as exc:
            problems.append(str(exc))
        if problems:
            raise ValueError("cannot import this Llama checkpoint:\n  " + "\n  ".join(problems))

        d_model, n_heads = get("hidden_size"), get("num_attention_heads")
        head_dim = get("head_dim")
        attention = {
            "n_heads": n_heads,
            "n_kv_heads": get("num_key_value_heads", n_heads),
            "bias": get("attention_bias"),
            "dropout": float(get("attention_dropout")),
        }
        if head_dim is not None and (d_model % n_heads or head_dim != d_model // n_heads):
            attention["head_dim"] = head_dim
        return decoder_config(
            name,
            dtype,
            vocab_size=get("vocab_size"),
            d_model=d_model,
            n_layers=get("num_hidden_layers"),
            max_seq_len=max_seq_len,
            attention=attention,
            mlp={"kind": "swiglu", "hidden": get("intermediate_size"), "bias": get("mlp_bias")},
            positions="rope",
            rope=rope,
            norm="rmsnorm",
            norm_eps=float(get("rms_norm_eps")),
            tie_embeddings=get("tie_word_embeddings"),
            init_std=float(get("initializer_range")),
        )

    def ignored(self, hf_name: str, cfg: ModelConfig) -> bool:
        """Tensors a checkpoint may hold that we derive instead (HF ignores them too)."""
        return bool(_DERIVED.fullmatch(hf_name)) or tied_head_copy(hf_name, cfg)

    # ------------------------------------------------------------------------------------------------- export

    def export_problems(self, cfg: ModelConfig) -> list[str]:
        """Why ``LlamaForCausalLM`` cannot express ``cfg`` (empty when it can)."""
        problems = decoder_export_problems(cfg, "Llama")
        if cfg.positions != "rope" or cfg.rope is None:
            problems.append(f"positions is {cfg.positions!r}; Llama uses 'rope'")
        else:
            problems += rope_export_problems(cfg.rope)
        if cfg.norm != "rmsnorm":
            problems.append(f"norm is {cfg.norm!r}; Llama uses 'rmsnorm'")
        if cfg.mlp.kind != "swiglu":
            problems.append(f"mlp.kind is {cfg.mlp.kind!r}; Llama uses 'swiglu'")
        return problems

    def hf_config(self, cfg: ModelConfig, *, dtype: str) -> dict[str, Any]:
        """``config.json`` for ``LlamaForCausalLM``, readable by transformers 4.x and 5.x (``cfg`` has passed
        :meth:`export_problems`)."""
        rope = cfg.rope
        if rope is None:
            raise ValueError("a Llama config needs RoPE (check export_problems first)")
        return {
            "architectures": [self.architecture],
            "model_type": self.model_type,
            "vocab_size": cfg.vocab_size,
            "hidden_size": cfg.d_model,
            "intermediate_size": cfg.mlp_hidden,
            "num_hidden_layers": cfg.n_layers,
            "num_attention_heads": cfg.attention.n_heads,
            "num_key_value_heads": cfg.attention.kv_heads,
            "head_dim": cfg.head_dim,
            "hidden_act": "silu",
            "rms_norm_eps": cfg.norm_eps,
            "initializer_range": cfg.init_std,
            "tie_word_embeddings": cfg.tie_embeddings,
            "attention_bias": cfg.attention.bias,
            "attention_dropout": cfg.attention.dropout,
            "mlp_bias": cfg.mlp.bias,
            "pretraining_tp": 1,
            # 4.x reads rope_theta + rope_scaling; 5.x reads rope_parameters (and lets rope_scaling override it,
            # which is consistent here). Dynamic NTK writes its original context as max_position_embeddings.
            **rope_to_hf(rope, max_seq_len=cfg.max_seq_len),
            **export_keys(dtype),
        }

    # -------------------------------------------------------------------------------------------------- names

    def hf_name(self, name: str, cfg: ModelConfig) -> Where | None:
        """The Hugging Face name of our tensor ``name`` (``None``: Llama has none); every tensor is stored in our
        layout, so never a :class:`Packed` entry."""
        return mapped_name(name, cfg, _GLOBAL, _LAYER, "model.layers.{i}.")
