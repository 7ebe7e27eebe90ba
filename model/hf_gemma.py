"""The Gemma 2 and Gemma 3 (text) families of Hugging Face ``transformers``.

What Gemma changes from Llama, and where it lives in our config:

* embeddings times ``sqrt(hidden_size)``, in the model's dtype (``embedding_scale``);
* RMSNorm scaling by ``1 + weight`` (``norm_weight_offset: 1``), and four norms per layer: ``input_layernorm``
  and ``post_attention_layernorm`` around attention, ``pre_feedforward_layernorm`` and
  ``post_feedforward_layernorm`` around the MLP (``residual: sandwich``);
* a gated GELU MLP, tanh-approximated (``mlp.kind: geglu``);
* attention logits scaled by ``query_pre_attn_scalar ** -0.5`` (``attention.scale``), sliding-window layers
  between global ones per ``layer_types`` (``attention.window``, ``attention.global_every``);
* Gemma 2: soft-capped attention logits and final logits (``attention.softcap``, ``final_softcap``);
* Gemma 3: QK-norm (``attention.qk_norm``) and a RoPE base of its own for the sliding layers
  (``rope.local_theta``; ``rope_local_base_freq`` in 4.x configs). Gemma 3's attention never soft-caps,
  whatever ``attn_logit_softcapping`` says (transformers does not pass it on), so neither do we.

Sizes, heads, the global RoPE and the projections are named as Llama names them and are read through
:class:`LlamaFamily`.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from model.hf_common import FULL, LAYER_NAME, SLIDING, layer_types, window_section
from model.hf_llama import LlamaFamily
from model.hf_llama_like import llama_problems, read_as_llama
from model.loading import Where
from specs.config_io import from_dict
from specs.model_config import ModelConfig

_ACTIVATIONS = {"gelu_pytorch_tanh": "tanh", "gelu": "none"}  # hidden_activation -> mlp.gelu_approximate
_LAYER = {  # ours -> Hugging Face, inside model.layers.{i}; the rest is Llama's
    "attn_norm.weight": "input_layernorm.weight",
    "attn_out_norm.weight": "post_attention_layernorm.weight",
    "mlp_norm.weight": "pre_feedforward_layernorm.weight",
    "mlp_out_norm.weight": "post_feedforward_layernorm.weight",
    "attn.q_norm.weight": "self_attn.q_norm.weight",
    "attn.k_norm.weight": "self_attn.k_norm.weight",
}
_NOT_LLAMA = ("hidden_activation", "hidden_act", "mlp_bias", "rope_scaling", "rope_parameters", "rope_theta")


class _GemmaFamily:
    """What Gemma 2 and Gemma 3 share; the subclasses give their defaults, RoPE and attention differences."""

    model_type: str
    architecture: str
    base_prefix = "model."
    label: str
    qk_norm: bool
    attention_softcap: bool
    pattern: int  # every pattern-th layer is global when config.json has no layer_types
    defaults: dict[str, Any]

    _llama = LlamaFamily()

    def rope_from_hf(self, values: dict[str, Any]) -> tuple[dict[str, Any], float | None]:
        """The global layers' RoPE keys in Llama's dialect, and the sliding layers' own (unscaled) base, or None
        when they rotate as the global layers do."""
        raise NotImplementedError

    def rope_to_hf(self, cfg: ModelConfig, llama_config: dict[str, Any]) -> dict[str, Any]:
        """The RoPE keys of this family's ``config.json``, from the Llama ones written for ``cfg``."""
        raise NotImplementedError

    # ------------------------------------------------------------------------------------------------- import

    def config_from_hf(self, hf: dict[str, Any], *, name: str, dtype: str) -> ModelConfig:
        """Our config for this family's ``config.json``; every key it cannot honour is named in one ``ValueError``."""
        values = {**self.defaults, **hf}  # an explicit null (no soft-capping, no window) is kept
        problems = []
        activation = values.get("hidden_activation") or values.get("hidden_act")
        approximate = _ACTIVATIONS.get(activation) if isinstance(activation, str) else None
        if approximate is None:
            problems.append(f"hidden_activation {activation!r} is not supported (one of {', '.join(_ACTIVATIONS)})")
        if values.get("use_bidirectional_attention"):
            problems.append("use_bidirectional_attention is set; only the causal decoder is supported")
        rope, local_theta = self.rope_from_hf(values)
        if problems:
            raise ValueError(f"cannot import this {self.label} checkpoint:\n  " + "\n  ".join(problems))

        llama_view = {k: v for k, v in values.items() if k not in _NOT_LLAMA and v is not None}
        data = read_as_llama({**llama_view, **rope, "hidden_act": "silu"}, label=self.label, name=name, dtype=dtype)
        windows = self._windows(
            values, n_layers=data["n_layers"], max_seq_len=data["max_seq_len"], keep_sliding=local_theta is not None
        )
        head_dim = values.get("head_dim") or data["d_model"] // data["attention"]["n_heads"]
        scalar = values["query_pre_attn_scalar"]
        data["attention"].update(
            softcap=values.get("attn_logit_softcapping") if self.attention_softcap else None,
            scale=None if scalar == head_dim else float(scalar) ** -0.5,
            qk_norm=self.qk_norm,
            **windows,
        )
        if windows["window"] is not None and local_theta is not None:
            data["rope"]["local_theta"] = local_theta
        data.update(
            mlp={"kind": "geglu", "hidden": data["mlp"]["hidden"], "bias": False, "gelu_approximate": approximate},
            residual="sandwich",
            norm_weight_offset=1.0,
            embedding_scale=data["d_model"] ** 0.5,
            final_softcap=values.get("final_logit_softcapping"),
        )
        return from_dict(data, kind="model", source="Hugging Face config.json")

    def _windows(self, values: dict[str, Any], *, n_layers: int, max_seq_len: int, keep_sliding: bool) -> dict[str, Any]:
        pattern = values.get("sliding_window_pattern") or self.pattern  # Gemma 3 configs from before layer_types
        types = values.get("layer_types") or [FULL if (i + 1) % pattern == 0 else SLIDING for i in range(n_layers)]
        try:
            return window_section(
                types, values.get("sliding_window"), n_layers=n_layers, max_seq_len=max_seq_len, keep_sliding=keep_sliding
            )
        except ValueError as exc:
            raise ValueError(f"cannot import this {self.label} checkpoint:\n  {exc}") from None

    def ignored(self, hf_name: str, cfg: ModelConfig) -> bool:
        return self._llama.ignored(hf_name, cfg)

    # ------------------------------------------------------------------------------------------------- export

    def _llama_view(self, cfg: ModelConfig) -> ModelConfig:
        """``cfg`` without what Gemma adds to Llama, for Llama's checks and ``config.json``."""
        attention = replace(cfg.attention, softcap=None, scale=None, qk_norm=False, window=None, global_every=None)
        return replace(
            cfg,
            attention=attention,
            mlp=replace(cfg.mlp, kind="swiglu"),
            rope=cfg.rope and replace(cfg.rope, local_theta=None),
            residual="pre" if cfg.residual == "sandwich" else cfg.residual,
            norm_weight_offset=0.0,
            embedding_scale=None,
            final_softcap=None,
        )

    def export_problems(self, cfg: ModelConfig) -> list[str]:
        """Why this family cannot express ``cfg`` (empty when it can)."""
        problems = llama_problems(self._llama_view(cfg), label=self.label)
        if cfg.residual != "sandwich":
            problems.append(f"residual is {cfg.residual!r}; {self.label} norms both sides of each branch ('sandwich')")
        if cfg.norm_weight_offset != 1.0:
            problems.append(f"norm_weight_offset is {cfg.norm_weight_offset}; {self.label}'s RMSNorm scales by 1 + weight")
        if cfg.embedding_scale is None or not math.isclose(cfg.embedding_scale, cfg.d_model**0.5, rel_tol=1e-9):
            problems.append(f"embedding_scale is {cfg.embedding_scale}; {self.label} scales by sqrt(d_model)")
        if cfg.mlp.kind != "geglu" or cfg.mlp.bias:
            problems.append(f"mlp is {cfg.mlp.kind!r} (bias {cfg.mlp.bias}); {self.label} uses GeGLU without biases")
        if cfg.attention.qk_norm != self.qk_norm:
            having = "always has" if self.qk_norm else "has no"
            problems.append(f"attention.qk_norm is {cfg.attention.qk_norm}; {self.label} {having} QK-norm")
        if cfg.attention.softcap is not None and not self.attention_softcap:
            problems.append(f"attention.softcap is {cfg.attention.softcap}; {self.label} does not soft-cap attention")
        scalar = _query_pre_attn_scalar(cfg)
        if abs(scalar - round(scalar)) > 1e-6 * scalar:
            problems.append(f"attention.scale {cfg.attention.scale} is not 1/sqrt of an integer (query_pre_attn_scalar)")
        return problems

    def hf_config(self, cfg: ModelConfig, *, dtype: str) -> dict[str, Any]:
        """``config.json`` for this family (``cfg`` has passed :meth:`export_problems`)."""
        config = self._llama.hf_config(self._llama_view(cfg), dtype=dtype)
        for key in ("hidden_act", "mlp_bias", "pretraining_tp"):
            config.pop(key, None)
        types = layer_types(cfg)
        config.update(
            architectures=[self.architecture],
            model_type=self.model_type,
            hidden_activation=next(k for k, v in _ACTIVATIONS.items() if v == cfg.mlp.gelu_approximate),
            query_pre_attn_scalar=round(_query_pre_attn_scalar(cfg)),
            sliding_window=cfg.attention.window if SLIDING in types else None,
            layer_types=types,
            final_logit_softcapping=cfg.final_softcap,
            attn_logit_softcapping=cfg.attention.softcap,
            use_bidirectional_attention=False,
        )
        config.update(self.rope_to_hf(cfg, config))
        return config

    # -------------------------------------------------------------------------------------------------- names

    def hf_name(self, name: str, cfg: ModelConfig) -> Where | None:
        """Gemma's four norms per layer (and Gemma 3's QK-norm); everything else is named as in Llama."""
        match = LAYER_NAME.fullmatch(name)
        if match and match.group(2) in _LAYER:
            return f"model.layers.{match.group(1)}.{_LAYER[match.group(2)]}"
        return self._llama.hf_name(name, cfg)


def _rope_type_named(params: dict[str, Any]) -> dict[str, Any]:
    """RoPE parameters with the type under ``rope_type`` (4.x configs may say ``type``), ``default`` if unnamed."""
    kind = params.pop("type", "default")
    params.setdefault("rope_type", kind)
    return params


def _query_pre_attn_scalar(cfg: ModelConfig) -> float:
    return float(cfg.head_dim) if cfg.attention.scale is None else cfg.attention.scale**-2


class Gemma2Family(_GemmaFamily):
    """``model_type: gemma2`` (``Gemma2ForCausalLM``)."""

    model_type = "gemma2"
    architecture = "Gemma2ForCausalLM"
    label = "Gemma 2"
    qk_norm = False
    attention_softcap = True
    pattern = 2
    defaults: dict[str, Any] = {  # Gemma2Config's, for keys a config.json leaves out
        "head_dim": 256,
        "hidden_activation": "gelu_pytorch_tanh",
        "max_position_embeddings": 8192,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": True,
        "query_pre_attn_scalar": 256,
        "sliding_window": 4096,
        "final_logit_softcapping": 30.0,
        "attn_logit_softcapping": 50.0,
    }

    def rope_from_hf(self, values: dict[str, Any]) -> tuple[dict[str, Any], float | None]:
        return {k: values[k] for k in ("rope_scaling", "rope_parameters", "rope_theta") if values.get(k) is not None}, None

    def rope_to_hf(self, cfg: ModelConfig, llama_config: dict[str, Any]) -> dict[str, Any]:
        return {}  # Llama's keys, as written

    def export_problems(self, cfg: ModelConfig) -> list[str]:
        problems = super().export_problems(cfg)
        if cfg.rope is not None and cfg.rope.local_theta is not None:
            problems.append("rope.local_theta is set; Gemma 2 has one RoPE base")
        return problems


class Gemma3TextFamily(_GemmaFamily):
    """``model_type: gemma3_text`` (``Gemma3ForCausalLM``, the text model of Gemma 3)."""

    model_type = "gemma3_text"
    architecture = "Gemma3ForCausalLM"
    label = "Gemma 3"
    qk_norm = True
    attention_softcap = False
    pattern = 6
    defaults: dict[str, Any] = {  # Gemma3TextConfig's, for keys a config.json leaves out
        "head_dim": 256,
        "hidden_activation": "gelu_pytorch_tanh",
        "max_position_embeddings": 131072,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": True,
        "query_pre_attn_scalar": 256,
        "sliding_window": 4096,
        "final_logit_softcapping": None,
    }
    global_theta, local_theta = 1_000_000.0, 10_000.0  # Gemma3TextConfig's default bases

    def rope_from_hf(self, values: dict[str, Any]) -> tuple[dict[str, Any], float | None]:
        """5.x nests RoPE parameters per layer type; 4.x has ``rope_theta`` (+ ``rope_scaling``) for the global
        layers and ``rope_local_base_freq`` for the sliding ones. As in transformers, a ``rope_scaling``
        applies to the global layers only. Sliding layers either rotate as the global ones do (the same
        parameters: no ``local_theta``) or unscaled at their own base (``local_theta``)."""
        params = values.get("rope_parameters")
        nested = params if isinstance(params, dict) and {FULL, SLIDING} & set(params) else {}
        full = _rope_type_named({**(nested.get(FULL) or {}), **(values.get("rope_scaling") or {})})
        local = _rope_type_named(dict(nested.get(SLIDING) or {}))
        full.setdefault("rope_theta", values.get("rope_theta") or self.global_theta)
        local.setdefault("rope_theta", values.get("rope_local_base_freq") or self.local_theta)
        if local == full:
            return {"rope_parameters": full}, None
        if local["rope_type"] != "default" or set(local) - {"rope_type", "rope_theta"}:
            raise ValueError(
                f"cannot import this {self.label} checkpoint:\n  the sliding layers' RoPE parameters {local} are "
                "neither the global layers' nor a plain ('default') base"
            )
        return {"rope_parameters": full}, float(local["rope_theta"])

    def rope_to_hf(self, cfg: ModelConfig, llama_config: dict[str, Any]) -> dict[str, Any]:
        full = llama_config["rope_parameters"]
        local_theta = cfg.rope.local_theta if cfg.rope is not None else None
        local = full if local_theta is None else {"rope_type": "default", "rope_theta": local_theta}
        return {"rope_parameters": {FULL: full, SLIDING: local}, "rope_local_base_freq": local["rope_theta"]}
