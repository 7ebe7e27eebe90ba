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

from model.loading import Packed, Where
from specs.config_io import from_dict
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
_OUR_LAYER_NAME = re.compile(r"layers\.(\d+)\.(.+)")
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
        values: dict[str, Any] = {**_DEFAULTS, **{k: v for k, v in hf.items() if v is not None}}

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

        data = {
            "kind": ModelConfig.KIND,
            "version": ModelConfig.VERSION,
            "name": name,
            "architecture": "decoder",
            "vocab_size": get("vocab_size"),
            "d_model": get("n_embd"),
            "n_layers": get("n_layer"),
            "max_seq_len": get("n_positions"),
            "attention": {"n_heads": get("n_head"), "bias": True, "dropout": float(get("attn_pdrop"))},
            "mlp": {
                "kind": "gelu",
                "hidden": get("n_inner") or 4 * get("n_embd"),
                "bias": True,
                "gelu_approximate": ACTIVATIONS[activation],
            },
            "positions": "learned",
            "norm": "layernorm",
            "norm_bias": True,
            "norm_eps": float(get("layer_norm_epsilon")),
            "residual": "pre",
            "final_norm": True,
            "tie_embeddings": get("tie_word_embeddings"),
            "dropout": float(get("resid_pdrop")),
            "init_std": float(get("initializer_range")),
            "dtype": dtype,
        }
        return from_dict(data, kind="model", source="Hugging Face config.json")

    def ignored(self, hf_name: str, cfg: ModelConfig) -> bool:
        """Tensors a checkpoint may hold that transformers skips too: mask buffers, a tied head's copy."""
        return bool(_MASK_BUFFERS.fullmatch(hf_name)) or (cfg.tie_embeddings and hf_name == "lm_head.weight")

    # ------------------------------------------------------------------------------------------------- export

    def export_problems(self, cfg: ModelConfig) -> list[str]:
        """Why ``GPT2LMHeadModel`` cannot express ``cfg`` (empty when it can)."""
        att = cfg.attention
        checks = [
            (cfg.architecture != "decoder", f"architecture is {cfg.architecture!r}; GPT-2 is a decoder"),
            (cfg.positions != "learned", f"positions is {cfg.positions!r}; GPT-2 uses 'learned'"),
            (cfg.norm != "layernorm" or not cfg.norm_bias, "GPT-2 uses LayerNorm with biases (norm: layernorm, norm_bias: true)"),
            (cfg.mlp.kind != "gelu", f"mlp.kind is {cfg.mlp.kind!r}; GPT-2 uses 'gelu'"),
            (not cfg.mlp.bias, "mlp.bias is false; GPT-2 has MLP biases"),
            (not (att.bias and att.output_bias), "GPT-2 has biases on q/k/v and the output projection (attention.bias)"),
            (att.kv_heads != att.n_heads, f"attention.n_kv_heads is {att.kv_heads}; GPT-2 is multi-head (= n_heads)"),
            (cfg.head_dim * att.n_heads != cfg.d_model, f"head_dim x n_heads is not d_model ({cfg.d_model}); GPT-2 splits d_model"),
            (att.qk_norm, "attention.qk_norm is set; GPT-2 has no QK-norm"),
            (att.softcap is not None, f"attention.softcap is {att.softcap}; GPT-2 has no logit soft-capping"),
            (att.window is not None, f"attention.window is {att.window}; GPT-2 has no sliding window"),
            (att.scale is not None, f"attention.scale is {att.scale}; GPT-2 scales by 1/sqrt(head_dim)"),
            (cfg.residual != "pre", f"residual is {cfg.residual!r}; GPT-2 is pre-norm"),
            (not cfg.final_norm, "final_norm is false; GPT-2 norms before the head (ln_f)"),
            (cfg.type_vocab_size > 0, "type_vocab_size is set; GPT-2 has no token types"),
            (cfg.embedding_norm, "embedding_norm is set; GPT-2 has none"),
            (cfg.embedding_scale is not None, "embedding_scale is set; GPT-2 does not scale its embeddings"),
            (cfg.final_softcap is not None, "final_softcap is set; GPT-2 does not cap its logits"),
        ]
        return [reason for failed, reason in checks if failed]

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
            "bos_token_id": None,
            "eos_token_id": None,
            "pad_token_id": None,
            "use_cache": True,
            "torch_dtype": dtype,  # 4.x
            "dtype": dtype,  # 5.x
        }

    # -------------------------------------------------------------------------------------------------- names

    def hf_name(self, name: str, cfg: ModelConfig) -> Where | None:
        """Where our tensor ``name`` is stored (``None``: GPT-2 has no such tensor). Under tied embeddings the
        head maps to the token embedding, so both of our names share one stored tensor."""
        if name == "lm_head.weight" and cfg.tie_embeddings:
            return _GLOBAL["tok_embeddings.weight"]
        if name in _GLOBAL:
            return _GLOBAL[name]
        match = _OUR_LAYER_NAME.fullmatch(name)
        if match and match.group(2) in _LAYER:
            where = _LAYER[match.group(2)]
            prefix = f"transformer.h.{match.group(1)}."
            if isinstance(where, Packed):
                return Packed(prefix + where.name, part=where.part, parts=where.parts, transposed=where.transposed)
            return prefix + where
        return None
