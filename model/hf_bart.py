"""The BART family of Hugging Face ``transformers``: ``config.json`` <-> :class:`ModelConfig`, and tensor names.

``BartForConditionalGeneration`` is a post-norm encoder-decoder with LayerNorm (with biases, eps 1e-5),
learned absolute positions read two rows into their tables (``position_offset: 2``), a LayerNorm on the
embeddings of each side (``layernorm_embedding``, our ``embedding_norm``), optionally embeddings scaled by
``sqrt(d_model)`` (``scale_embedding``), a GELU MLP (its ``activation_dropout`` is our ``mlp.dropout``), biases on every linear map, multi-head attention, no
final norm, one token embedding (``model.shared``) for the encoder, the decoder and the head, and a fixed
``final_logits_bias`` added to the logits (our ``logits_bias``).

``BartModel`` checkpoints (the Hub's ``facebook/bart-base``: no head, no ``final_logits_bias``, names without
the ``model.`` prefix) import as the same model with ``logits_bias: false``, the head tied to the shared
embedding, exactly what ``BartForConditionalGeneration.from_pretrained`` makes of them (it zero-fills the missing
bias). Such a model exports as ``BartForConditionalGeneration`` without ``final_logits_bias``.

Only the tied layout is imported: with ``tie_word_embeddings: false`` transformers 5 gives the encoder, the
decoder and the head embedding matrices of their own, which our model (one token embedding for both sides)
cannot hold. Checkpoints that store the tied copies (``model.encoder.embed_tokens.weight``,
``model.decoder.embed_tokens.weight``, ``lm_head.weight``) load; the copies are skipped, as transformers skips
them. The two sides must agree on what our config shares: attention heads and MLP width.
"""

from __future__ import annotations

import math
import re
from typing import Any

from model.hf_common import export_keys, with_defaults
from model.hf_gpt2 import ACTIVATIONS
from specs.config_io import from_dict
from specs.model_config import ModelConfig

_GLOBAL = {
    "tok_embeddings.weight": "model.shared.weight",
    "lm_head.weight": "lm_head.weight",
    "logits_bias.bias": "final_logits_bias",
    **{
        f"{side}.{ours}.{kind}": f"model.{side}.{hf}.{kind}"
        for side in ("encoder", "decoder")
        for ours, hf, kinds in (("positions.embedding", "embed_positions", ("weight",)),
                                ("embedding_norm", "layernorm_embedding", ("weight", "bias")))
        for kind in kinds
    },
}
_LINEARS = {"attn.wq": "self_attn.q_proj", "attn.wk": "self_attn.k_proj", "attn.wv": "self_attn.v_proj",
            "attn.wo": "self_attn.out_proj", "mlp.fc": "fc1", "mlp.proj": "fc2", "attn_norm": "self_attn_layer_norm",
            "mlp_norm": "final_layer_norm"}
_CROSS = {"cross_attn.wq": "encoder_attn.q_proj", "cross_attn.wk": "encoder_attn.k_proj",
          "cross_attn.wv": "encoder_attn.v_proj", "cross_attn.wo": "encoder_attn.out_proj",
          "cross_norm": "encoder_attn_layer_norm"}
_LAYER = {
    side: {f"{ours}.{kind}": f"{hf}.{kind}" for ours, hf in table.items() for kind in ("weight", "bias")}
    for side, table in (("encoder", _LINEARS), ("decoder", {**_LINEARS, **_CROSS}))
}
_OUR_LAYER_NAME = re.compile(r"(encoder|decoder)\.layers\.(\d+)\.(.+)")
_ARCHITECTURES = ("BartForConditionalGeneration", "BartModel")
_TIED_COPIES = {"model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight", "lm_head.weight"}

# BartConfig's defaults, for keys a config.json may leave out.
_DEFAULTS: dict[str, Any] = {
    "vocab_size": 50265,
    "max_position_embeddings": 1024,
    "encoder_layers": 12,
    "encoder_ffn_dim": 4096,
    "encoder_attention_heads": 16,
    "decoder_layers": 12,
    "decoder_ffn_dim": 4096,
    "decoder_attention_heads": 16,
    "encoder_layerdrop": 0.0,
    "decoder_layerdrop": 0.0,
    "activation_function": "gelu",
    "d_model": 1024,
    "dropout": 0.1,
    "attention_dropout": 0.0,
    "activation_dropout": 0.0,
    "init_std": 0.02,
    "scale_embedding": False,
    "tie_word_embeddings": True,
}
_EPS = 1e-5  # BART's LayerNorms use PyTorch's default eps; config.json has no key for it


class BartFamily:
    """``model_type: bart`` (``BartForConditionalGeneration``)."""

    model_type = "bart"
    architecture = "BartForConditionalGeneration"
    base_prefix = "model."  # a BartModel checkpoint stores the body without it

    # ------------------------------------------------------------------------------------------------- import

    def config_from_hf(self, hf: dict[str, Any], *, name: str, dtype: str) -> ModelConfig:
        """Our config for a BART ``config.json``; every key it cannot honour is named in one ``ValueError``."""
        values = with_defaults(hf, _DEFAULTS)
        problems = []
        architecture = (values.get("architectures") or [self.architecture])[0]
        if architecture not in _ARCHITECTURES:
            problems.append(f"architectures[0] {architecture!r} is not supported; supported: {', '.join(_ARCHITECTURES)}")
        activation = values["activation_function"]
        if activation not in ACTIVATIONS:
            problems.append(f"activation_function {activation!r} is not supported; supported: {', '.join(ACTIVATIONS)}")
        for ours, (enc, dec) in (("attention.n_heads", ("encoder_attention_heads", "decoder_attention_heads")),
                                 ("mlp.hidden", ("encoder_ffn_dim", "decoder_ffn_dim"))):
            if values[enc] != values[dec]:
                problems.append(f"{enc} ({values[enc]}) differs from {dec} ({values[dec]}); lmplanes has one {ours}")
        for key in ("encoder_layerdrop", "decoder_layerdrop"):
            if values[key]:
                problems.append(f"{key} is {values[key]} (LayerDrop, skipping whole layers in training); only 0 is supported")
        if not values["tie_word_embeddings"]:
            problems.append(
                "tie_word_embeddings is false (separate encoder, decoder and head embeddings); lmplanes' "
                "encoder-decoder shares one token embedding, so only the tied layout is supported"
            )
        if problems:
            raise ValueError("cannot import this BART checkpoint:\n  " + "\n  ".join(problems))
        data = {
            "kind": ModelConfig.KIND,
            "version": ModelConfig.VERSION,
            "name": name,
            "architecture": "encoder_decoder",
            "head": "lm",
            "vocab_size": values["vocab_size"],
            "d_model": values["d_model"],
            "n_layers": values["decoder_layers"],
            "encoder_layers": values["encoder_layers"],
            "max_seq_len": values["max_position_embeddings"],
            "attention": {
                "n_heads": values["decoder_attention_heads"],
                "bias": True,
                "dropout": float(values["attention_dropout"]),
            },
            "mlp": {"kind": "gelu", "hidden": values["decoder_ffn_dim"], "bias": True,
                    "gelu_approximate": ACTIVATIONS[activation], "dropout": float(values["activation_dropout"])},
            "positions": "learned",
            "position_offset": 2,
            "norm": "layernorm",
            "norm_eps": _EPS,
            "norm_bias": True,
            "residual": "post",
            "final_norm": False,
            "tie_embeddings": True,
            "embedding_norm": True,
            "embedding_scale": math.sqrt(values["d_model"]) if values["scale_embedding"] else None,
            "logits_bias": architecture == self.architecture,  # BartModel has none: zero, so left out
            "dropout": float(values["dropout"]),
            "init_std": float(values["init_std"]),
            "dtype": dtype,
        }
        return from_dict(data, kind="model", source="Hugging Face config.json")

    def ignored(self, hf_name: str, cfg: ModelConfig) -> bool:
        """The tied copies of the shared embedding some checkpoints store (transformers skips them too)."""
        return hf_name in _TIED_COPIES

    # ------------------------------------------------------------------------------------------------- export

    def export_problems(self, cfg: ModelConfig) -> list[str]:
        """Why ``BartForConditionalGeneration`` cannot express ``cfg`` (empty when it can)."""
        att = cfg.attention
        scale_ok = cfg.embedding_scale is None or math.isclose(cfg.embedding_scale, math.sqrt(cfg.d_model))
        wanted: list[tuple[bool, str]] = [
            (cfg.architecture == "encoder_decoder", f"architecture is {cfg.architecture!r}; BART is an encoder_decoder"),
            (cfg.positions == "learned" and cfg.position_offset == 2,
             "BART learns absolute positions two rows into the table (positions: learned, position_offset: 2)"),
            (cfg.norm == "layernorm" and cfg.norm_bias and cfg.norm_eps == _EPS,
             f"BART norms are LayerNorm with a bias and eps {_EPS} (norm: layernorm, norm_bias: true)"),
            (cfg.residual == "post", f"residual is {cfg.residual!r}; BART is post-norm"),
            (not cfg.final_norm, "final_norm is true; BART has no norm after the last block"),
            (cfg.embedding_norm, "embedding_norm is false; BART norms the embeddings of each side"),
            (scale_ok, f"embedding_scale is {cfg.embedding_scale}; BART scales by sqrt(d_model) or not at all"),
            (cfg.tie_embeddings, "tie_embeddings is false; BART (as imported here) ties the head to the embeddings"),
            (cfg.final_softcap is None, f"final_softcap is {cfg.final_softcap}; BART has no logit soft-capping"),
            (cfg.mlp.kind == "gelu" and cfg.mlp.bias, "BART's MLP is GELU with biases (mlp.kind: gelu, bias: true)"),
            (att.bias and att.output_bias, "BART's attention projections all have biases"),
            (att.kv_heads == att.n_heads, f"attention has {att.kv_heads} kv heads; BART is MHA"),
            (cfg.head_dim * att.n_heads == cfg.d_model, "attention.head_dim * n_heads differs from d_model"),
            (not att.qk_norm, "attention.qk_norm is set; BART has no QK-norm"),
            (att.softcap is None, f"attention.softcap is {att.softcap}; BART has no soft-capping"),
            (att.scale is None, f"attention.scale is {att.scale}; BART scales by 1/sqrt(head_dim)"),
            (cfg.norm_weight_offset == 0, f"norm_weight_offset is {cfg.norm_weight_offset}; BART has none"),
        ]
        return [reason for ok, reason in wanted if not ok]

    def hf_config(self, cfg: ModelConfig, *, dtype: str) -> dict[str, Any]:
        """``config.json`` for ``BartForConditionalGeneration`` (``cfg`` has passed :meth:`export_problems`)."""
        activation = next(name for name, approx in ACTIVATIONS.items() if approx == cfg.mlp.gelu_approximate)
        return {
            "architectures": [self.architecture],
            "model_type": self.model_type,
            "is_encoder_decoder": True,
            "vocab_size": cfg.vocab_size,
            "max_position_embeddings": cfg.max_seq_len,
            "d_model": cfg.d_model,
            "encoder_layers": cfg.n_encoder_layers,
            "decoder_layers": cfg.n_layers,
            "encoder_attention_heads": cfg.attention.n_heads,
            "decoder_attention_heads": cfg.attention.n_heads,
            "encoder_ffn_dim": cfg.mlp_hidden,
            "decoder_ffn_dim": cfg.mlp_hidden,
            "encoder_layerdrop": 0.0,
            "decoder_layerdrop": 0.0,
            "activation_function": activation,
            "dropout": cfg.dropout,
            "attention_dropout": cfg.attention.dropout,
            "activation_dropout": cfg.mlp.dropout,
            "init_std": cfg.init_std,
            "scale_embedding": cfg.embedding_scale is not None,
            "tie_word_embeddings": True,
            "decoder_start_token_id": None,  # a tokenizer matter, like the other special tokens
            "forced_eos_token_id": None,
            **export_keys(dtype),
        }

    # -------------------------------------------------------------------------------------------------- names

    def hf_name(self, name: str, cfg: ModelConfig) -> str | None:
        """The Hugging Face name of our tensor ``name`` (``None``: BART has none). The tied head maps to the
        shared embedding, so both of our names share one stored tensor."""
        if name == "lm_head.weight" and cfg.tie_embeddings:
            return _GLOBAL["tok_embeddings.weight"]
        if name in _GLOBAL:
            return _GLOBAL[name]
        match = _OUR_LAYER_NAME.fullmatch(name)
        if match and match.group(3) in _LAYER[match.group(1)]:
            side, index, inner = match.groups()
            return f"model.{side}.layers.{index}.{_LAYER[side][inner]}"
        return None
