"""The BERT family of Hugging Face ``transformers``: ``config.json`` <-> :class:`ModelConfig`, and tensor names.

``BertModel`` (hidden states) imports as an encoder with ``head: none``; ``BertForMaskedLM`` and
``BertForPreTraining`` as ``head: mlm``, their weights under a ``bert.`` prefix beside the ``cls.`` head. BERT is
post-norm with LayerNorm (biases), learned absolute positions, token-type embeddings, a LayerNorm on the summed
embeddings, exact GELU and biases on every linear map.

Skipped on import, and said so here: the pooler (``pooler.dense``, a tanh layer over ``[CLS]`` that gives
``BertModel``'s ``pooler_output``; our encoder returns hidden states and pools with :mod:`model.pooling`), the
next-sentence head of ``BertForPreTraining`` (``cls.seq_relationship``), the ``position_ids`` /
``token_type_ids`` buffers some checkpoints carry, and the MLM output bias stored a second time. Transformers
5 ties ``cls.predictions.decoder.bias`` to ``cls.predictions.bias`` only under ``tie_word_embeddings`` (as it
ties the decoder's weight); untied, the decoder's own bias is the one its forward adds. So the bias is read from
(and written as) ``cls.predictions.bias`` for a tied model and ``cls.predictions.decoder.bias`` for an untied
one, and the other name is skipped (transformers 5 reports the unused ``cls.predictions.bias`` of an untied
export as missing and zero-fills it; its outputs do not change). An exported ``BertModel`` therefore has no pooler weights: load it with
``AutoModel.from_pretrained(dir, add_pooling_layer=False)`` (otherwise transformers adds a freshly initialised
pooler and warns; ``last_hidden_state`` is the same either way).
"""

from __future__ import annotations

import re
from typing import Any

from specs.config_io import from_dict
from specs.model_config import ModelConfig

# Our names -> Hugging Face names inside the BERT body (``bert.`` is prefixed in the MLM layouts). Layer entries
# are relative to ``layers.{i}.`` / ``encoder.layer.{i}.``.
_BODY = {
    "tok_embeddings.weight": "embeddings.word_embeddings.weight",
    "positions.embedding.weight": "embeddings.position_embeddings.weight",
    "token_types.weight": "embeddings.token_type_embeddings.weight",
    "embedding_norm.weight": "embeddings.LayerNorm.weight",
    "embedding_norm.bias": "embeddings.LayerNorm.bias",
}
_LAYER = {
    f"{ours}.{kind}": f"{hf}.{kind}"
    for ours, hf in (
        ("attn.wq", "attention.self.query"),
        ("attn.wk", "attention.self.key"),
        ("attn.wv", "attention.self.value"),
        ("attn.wo", "attention.output.dense"),
        ("attn_norm", "attention.output.LayerNorm"),
        ("mlp.fc", "intermediate.dense"),
        ("mlp.proj", "output.dense"),
        ("mlp_norm", "output.LayerNorm"),
    )
    for kind in ("weight", "bias")
}
_HEAD = {
    "mlm_head.dense.weight": "cls.predictions.transform.dense.weight",
    "mlm_head.dense.bias": "cls.predictions.transform.dense.bias",
    "mlm_head.norm.weight": "cls.predictions.transform.LayerNorm.weight",
    "mlm_head.norm.bias": "cls.predictions.transform.LayerNorm.bias",
    "mlm_head.decoder.weight": "cls.predictions.decoder.weight",
    "mlm_head.decoder.bias": "cls.predictions.bias",
}
_UNTIED_BIAS = "cls.predictions.decoder.bias"  # the output bias an untied BertForMaskedLM adds (transformers 5)
_OUR_LAYER_NAME = re.compile(r"layers\.(\d+)\.(.+)")
_SKIPPED = re.compile(
    r"(bert\.)?(pooler\.dense\.(weight|bias)|embeddings\.(position_ids|token_type_ids))"
    r"|cls\.seq_relationship\.(weight|bias)"
)

# The classes we import, and whether they carry the masked-LM head (and so the ``bert.`` prefix).
ARCHITECTURES = {"BertModel": False, "BertForMaskedLM": True, "BertForPreTraining": True}
# BertConfig's defaults, for keys a config.json may leave out.
_DEFAULTS: dict[str, Any] = {
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
    "max_position_embeddings": 512,
    "type_vocab_size": 2,
    "initializer_range": 0.02,
    "layer_norm_eps": 1e-12,
    "position_embedding_type": "absolute",
    "tie_word_embeddings": True,
    "is_decoder": False,
    "add_cross_attention": False,
}
_REQUIRED = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")


class BertFamily:
    """``model_type: bert`` (``BertModel``, ``BertForMaskedLM``, ``BertForPreTraining``)."""

    model_type = "bert"
    architecture = "BertModel"
    base_prefix = ""  # hf_name reads BertModel and BertFor* names itself

    # ------------------------------------------------------------------------------------------------- import

    def config_from_hf(self, hf: dict[str, Any], *, name: str, dtype: str) -> ModelConfig:
        """Our config for a BERT ``config.json``; every key it cannot honour is named in one ``ValueError``."""
        missing = [key for key in _REQUIRED if hf.get(key) is None]
        if missing:
            raise ValueError(f"BERT config.json lacks required keys: {', '.join(missing)}")
        values: dict[str, Any] = {**_DEFAULTS, **{k: v for k, v in hf.items() if v is not None}}
        problems = []
        architecture = (values.get("architectures") or [self.architecture])[0]
        if architecture not in ARCHITECTURES:
            problems.append(f"architectures[0] {architecture!r} is not supported; supported: {', '.join(ARCHITECTURES)}")
        if values["hidden_act"] != "gelu":
            problems.append(
                f"hidden_act {values['hidden_act']!r} is not supported: lmplanes' BERT uses the exact (erf) GELU, "
                "hidden_act 'gelu'"
            )
        if values["position_embedding_type"] != "absolute":
            problems.append(
                f"position_embedding_type {values['position_embedding_type']!r} is not implemented; only 'absolute' "
                "(learned positions)"
            )
        for key, why in (("is_decoder", "a causal BERT"), ("add_cross_attention", "cross-attention")):
            if values[key]:
                problems.append(f"{key} is true: {why} is not supported; only the bidirectional encoder")
        if problems:
            raise ValueError("cannot import this BERT checkpoint:\n  " + "\n  ".join(problems))

        data = {
            "kind": ModelConfig.KIND,
            "version": ModelConfig.VERSION,
            "name": name,
            "architecture": "encoder",
            "head": "mlm" if ARCHITECTURES[architecture] else "none",
            "vocab_size": values["vocab_size"],
            "d_model": values["hidden_size"],
            "n_layers": values["num_hidden_layers"],
            "max_seq_len": values["max_position_embeddings"],
            "attention": {
                "n_heads": values["num_attention_heads"],
                "bias": True,
                "dropout": float(values["attention_probs_dropout_prob"]),
            },
            "mlp": {"kind": "gelu", "hidden": values["intermediate_size"], "bias": True},
            "positions": "learned",
            "norm": "layernorm",
            "norm_eps": float(values["layer_norm_eps"]),
            "norm_bias": True,
            "residual": "post",
            "final_norm": False,
            "tie_embeddings": values["tie_word_embeddings"],
            "type_vocab_size": values["type_vocab_size"],
            "embedding_norm": True,
            "dropout": float(values["hidden_dropout_prob"]),
            "init_std": float(values["initializer_range"]),
            "dtype": dtype,
        }
        return from_dict(data, kind="model", source="Hugging Face config.json")

    def ignored(self, hf_name: str, cfg: ModelConfig) -> bool:
        """Stored tensors we skip (see the module docstring): the pooler, the NSP head, id buffers, the MLM
        decoder's copy of a tied embedding and the output bias under the name the tie state does not use."""
        if cfg.tie_embeddings:
            unused = {_HEAD["mlm_head.decoder.weight"], _UNTIED_BIAS}
        else:
            unused = {_HEAD["mlm_head.decoder.bias"]}
        return bool(_SKIPPED.fullmatch(hf_name)) or hf_name in unused

    # ------------------------------------------------------------------------------------------------- export

    def export_problems(self, cfg: ModelConfig) -> list[str]:
        """Why ``BertModel``/``BertForMaskedLM`` cannot express ``cfg`` (empty when they can)."""
        attention = cfg.attention
        wanted: list[tuple[bool, str]] = [
            (cfg.architecture == "encoder", f"architecture is {cfg.architecture!r}; BERT is an encoder"),
            (cfg.positions == "learned", f"positions is {cfg.positions!r}; BERT learns absolute positions"),
            (cfg.norm == "layernorm" and cfg.norm_bias, "BERT norms are LayerNorm with a bias (norm: layernorm, norm_bias: true)"),
            (cfg.residual == "post", f"residual is {cfg.residual!r}; BERT is post-norm"),
            (not cfg.final_norm, "final_norm is true; BERT has no norm after the last block"),
            (cfg.embedding_norm, "embedding_norm is false; BERT norms the summed embeddings"),
            (cfg.embedding_scale is None, f"embedding_scale is {cfg.embedding_scale}; BERT does not scale embeddings"),
            (cfg.type_vocab_size > 0, "type_vocab_size is 0; BERT always has token-type embeddings"),
            (cfg.final_softcap is None, f"final_softcap is {cfg.final_softcap}; BERT has no logit soft-capping"),
            (
                cfg.mlp.kind == "gelu" and cfg.mlp.gelu_approximate == "none" and cfg.mlp.bias,
                "BERT's MLP is exact GELU with biases (mlp.kind: gelu, gelu_approximate: none, bias: true)",
            ),
            (attention.bias and attention.output_bias, "BERT's attention projections all have biases"),
            (attention.kv_heads == attention.n_heads, f"attention has {attention.kv_heads} kv heads; BERT is MHA"),
            (cfg.head_dim * attention.n_heads == cfg.d_model, "attention.head_dim * n_heads differs from d_model"),
            (not attention.qk_norm, "attention.qk_norm is set; BERT has no QK-norm"),
            (attention.softcap is None, f"attention.softcap is {attention.softcap}; BERT has no soft-capping"),
            (attention.window is None, f"attention.window is {attention.window}; BERT attends globally"),
            (attention.scale is None, f"attention.scale is {attention.scale}; BERT scales by 1/sqrt(head_dim)"),
        ]
        return [reason for ok, reason in wanted if not ok]

    def hf_config(self, cfg: ModelConfig, *, dtype: str) -> dict[str, Any]:
        """``config.json`` for ``BertForMaskedLM`` (``head: mlm``) or ``BertModel`` (``head: none``)."""
        return {
            "architectures": ["BertForMaskedLM" if cfg.head == "mlm" else "BertModel"],
            "model_type": self.model_type,
            "vocab_size": cfg.vocab_size,
            "hidden_size": cfg.d_model,
            "num_hidden_layers": cfg.n_layers,
            "num_attention_heads": cfg.attention.n_heads,
            "intermediate_size": cfg.mlp_hidden,
            "hidden_act": "gelu",
            "hidden_dropout_prob": cfg.dropout,
            "attention_probs_dropout_prob": cfg.attention.dropout,
            "max_position_embeddings": cfg.max_seq_len,
            "type_vocab_size": cfg.type_vocab_size,
            "initializer_range": cfg.init_std,
            "layer_norm_eps": cfg.norm_eps,
            "position_embedding_type": "absolute",
            "tie_word_embeddings": cfg.tie_embeddings,
            "is_decoder": False,
            "add_cross_attention": False,
            "pad_token_id": None,  # a tokenizer matter; the weights do not depend on it
            "use_cache": False,
            "torch_dtype": dtype,  # 4.x
            "dtype": dtype,  # 5.x
        }

    # -------------------------------------------------------------------------------------------------- names

    def hf_name(self, name: str, cfg: ModelConfig) -> str | None:
        """The Hugging Face name of our tensor ``name`` (``None``: BERT has none). Under tied embeddings the MLM
        decoder maps to the word embeddings, so both of our names share one stored tensor."""
        prefix = "bert." if cfg.head == "mlm" else ""
        if name == "mlm_head.decoder.weight" and cfg.tie_embeddings:
            return prefix + _BODY["tok_embeddings.weight"]
        if name == "mlm_head.decoder.bias" and not cfg.tie_embeddings:
            return _UNTIED_BIAS
        if name in _HEAD:
            return _HEAD[name] if cfg.head == "mlm" else None
        if name in _BODY:
            return prefix + _BODY[name]
        match = _OUR_LAYER_NAME.fullmatch(name)
        if match and match.group(2) in _LAYER:
            return f"{prefix}encoder.layer.{match.group(1)}.{_LAYER[match.group(2)]}"
        return None
