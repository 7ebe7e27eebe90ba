"""The GPT-2 family of Hugging Face ``transformers``: ``config.json`` <-> :class:`ModelConfig`, and tensor names.

``GPT2LMHeadModel`` is a pre-norm decoder with LayerNorm (with biases), learned absolute positions, a GELU MLP
(``gelu_new``: the tanh approximation), biases on every projection, multi-head attention and, by default,
a head tied to the token embeddings. Its projections are ``Conv1D`` modules, which store weights as
``[in, out]`` (the transpose of ``nn.Linear``), and its attention packs q, k and v into one ``c_attn``; both
are described per tensor by :class:`model.loading.Packed` entries, so the shared loader unpacks them on import
and :func:`model.to_hf` packs them on export. The causal-mask buffers old checkpoints saved (``attn.bias``,
``attn.masked_bias``) are skipped, as transformers skips them.
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
from model.loading import Packed, Where
from specs.model_config import ModelConfig

# Our names -> Hugging Face names (or where they sit in a packed tensor). Layer entries are relative to
# ``layers.{i}.`` / ``transformer.h.{i}.``.
_GLOBAL = {
    "tok_embeddings.weight": "transformer.wte.weight",
    "positions.embedding.weight": "transformer.wpe.weight",
    "norm.weight": "transformer.ln_f.weight",
    "norm.bias": "transformer.ln_f.bias",
    "lm_head.weight": "lm_head.weight",  # an nn.Linear in GPT2LMHeadModel: stored as ours
}
_LAYER: dict[str, Where] = {
    "attn_norm.weight": "ln_1.weight",
    "attn_norm.bias": "ln_1.bias",
    "mlp_norm.weight": "ln_2.weight",
    "mlp_norm.bias": "ln_2.bias",
    **{f"attn.w{x}.weight": Packed("attn.c_attn.weight", part=i, parts=3, transposed=True) for i, x in enumerate("qkv")},
    **{f"attn.w{x}.bias": Packed("attn.c_attn.bias", part=i, parts=3) for i, x in enumerate("qkv")},
    "attn.wo.weight": Packed("attn.c_proj.weight", transposed=True),
    "attn.wo.bias": "attn.c_proj.bias",
    "mlp.fc.weight": Packed("mlp.c_fc.weight", transposed=True),
    "mlp.fc.bias": "mlp.c_fc.bias",
    "mlp.proj.weight": Packed("mlp.c_proj.weight", transposed=True),
    "mlp.proj.bias": "mlp.c_proj.bias",
}
# Causal-mask buffers of old checkpoints, with or without the LM's prefix (a base GPT2Model has none).
_MASK_BUFFERS = re.compile(r"(transformer\.)?h\.\d+\.attn\.(bias|masked_bias)")

# activation_function -> our MLPConfig.gelu_approximate; exported as the first name with that value.
ACTIVATIONS = {"gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "gelu": "none"}
# GPT2Config's defaults, for keys a config.json may leave out.
_DEFAULTS: dict[str, Any] = {
    "vocab_size": 50257,
    "n_positions": 1024,
    "n_embd": 768,
    "n_layer": 12,
    "n_head": 12,
    "n_inner": None,
    "activation_function": "gelu_new",
    "resid_pdrop": 0.1,
    "embd_pdrop": 0.1,
    "attn_pdrop": 0.1,
    "layer_norm_epsilon": 1e-5,
    "initializer_range": 0.02,
    "scale_attn_weights": True,
    "scale_attn_by_inverse_layer_idx": False,
    "reorder_and_upcast_attn": False,
    "add_cross_attention": False,
    "tie_word_embeddings": True,
}


class GPT2Family:
    """``model_type: gpt2`` (``GPT2LMHeadModel``)."""

    model_type = "gpt2"
    architecture = "GPT2LMHeadModel"
    base_prefix = "transformer."

    # ------------------------------------------------------------------------------------------------- import

    def config_from_hf(self, hf: dict[str, Any], *, name: str, dtype: str) -> ModelConfig:
        """Our config for a GPT-2 ``config.json``; every key it cannot honour is named in one ``ValueError``."""
        values = with_defaults(hf, _DEFAULTS)

        def get(key: str) -> Any:
            return values.get(key)

        problems = []
        activation = get("activation_function")
        if activation not in ACTIVATIONS:
            problems.append(
                f"activation_function {activation!r} is not supported; supported: {', '.join(ACTIVATIONS)}"
            )
        if not get("scale_attn_weights"):
            problems.append(
                "scale_attn_weights is false (attention logits without 1/sqrt(head_dim)) is not supported yet"
            )
        for key, why in (
            ("scale_attn_by_inverse_layer_idx", "an extra 1/(layer + 1) on the attention logits"),
            ("reorder_and_upcast_attn", "a different attention arithmetic"),
            ("add_cross_attention", "cross-attention layers"),
        ):
            if get(key):
                problems.append(f"{key} is true ({why}); only false is supported")
        if get("embd_pdrop") != get("resid_pdrop"):
            problems.append(
                f"embd_pdrop ({get('embd_pdrop')}) differs from resid_pdrop ({get('resid_pdrop')}); lmplanes has "
                "one dropout rate for the embeddings and the residual branches"
            )
        if problems:
            raise ValueError("cannot import this GPT-2 checkpoint:\n  " + "\n  ".join(problems))

        return decoder_config(
            name,
            dtype,
            vocab_size=get("vocab_size"),
            d_model=get("n_embd"),
            n_layers=get("n_layer"),
            max_seq_len=get("n_positions"),
            attention={"n_heads": get("n_head"), "bias": True, "dropout": float(get("attn_pdrop"))},
            mlp={
                "kind": "gelu",
                "hidden": get("n_inner") or 4 * get("n_embd"),
                "bias": True,
                "gelu_approximate": ACTIVATIONS[activation],
            },
            positions="learned",
            norm="layernorm",
            norm_bias=True,
            norm_eps=float(get("layer_norm_epsilon")),
            tie_embeddings=get("tie_word_embeddings"),
            dropout=float(get("resid_pdrop")),
            init_std=float(get("initializer_range")),
        )

    def ignored(self, hf_name: str, cfg: ModelConfig) -> bool:
        """Tensors a checkpoint may hold that transformers skips too: mask buffers, a tied head's copy."""
        return bool(_MASK_BUFFERS.fullmatch(hf_name)) or tied_head_copy(hf_name, cfg)

    # ------------------------------------------------------------------------------------------------- export

    def export_problems(self, cfg: ModelConfig) -> list[str]:
        """Why ``GPT2LMHeadModel`` cannot express ``cfg`` (empty when it can)."""
        att = cfg.attention
        checks = [
            (cfg.positions != "learned", f"positions is {cfg.positions!r}; GPT-2 uses 'learned'"),
            (cfg.norm != "layernorm" or not cfg.norm_bias, "GPT-2 uses LayerNorm with biases (norm: layernorm, norm_bias: true)"),
            (cfg.mlp.kind != "gelu", f"mlp.kind is {cfg.mlp.kind!r}; GPT-2 uses 'gelu'"),
            (not cfg.mlp.bias, "mlp.bias is false; GPT-2 has MLP biases"),
            (not att.bias, "attention.bias is false; GPT-2 has biases on q/k/v and the output projection"),
            (att.kv_heads != att.n_heads, f"attention.n_kv_heads is {att.kv_heads}; GPT-2 is multi-head (= n_heads)"),
            (cfg.head_dim * att.n_heads != cfg.d_model, f"head_dim x n_heads is not d_model ({cfg.d_model}); GPT-2 splits d_model"),
        ]
        return decoder_export_problems(cfg, "GPT-2") + [reason for failed, reason in checks if failed]

    def hf_config(self, cfg: ModelConfig, *, dtype: str) -> dict[str, Any]:
        """``config.json`` for ``GPT2LMHeadModel`` (``cfg`` has passed :meth:`export_problems`)."""
        activation = next(name for name, approx in ACTIVATIONS.items() if approx == cfg.mlp.gelu_approximate)
        return {
            "architectures": [self.architecture],
            "model_type": self.model_type,
            "vocab_size": cfg.vocab_size,
            "n_positions": cfg.max_seq_len,
            "n_embd": cfg.d_model,
            "n_layer": cfg.n_layers,
            "n_head": cfg.attention.n_heads,
            "n_inner": cfg.mlp_hidden,
            "activation_function": activation,
            "resid_pdrop": cfg.dropout,
            "embd_pdrop": cfg.dropout,
            "attn_pdrop": cfg.attention.dropout,
            "layer_norm_epsilon": cfg.norm_eps,
            "initializer_range": cfg.init_std,
            "scale_attn_weights": True,
            "scale_attn_by_inverse_layer_idx": False,
            "reorder_and_upcast_attn": False,
            "add_cross_attention": False,
            "tie_word_embeddings": cfg.tie_embeddings,
            **export_keys(dtype),
        }

    # -------------------------------------------------------------------------------------------------- names

    def hf_name(self, name: str, cfg: ModelConfig) -> Where | None:
        """Where our tensor ``name`` is stored (``None``: GPT-2 has no such tensor)."""
        return mapped_name(name, cfg, _GLOBAL, _LAYER, "transformer.h.{i}.")
