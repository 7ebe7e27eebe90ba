"""The Qwen 2 and Qwen 3 families of Hugging Face ``transformers``: Llama with changes to attention.

* ``qwen2`` (``Qwen2ForCausalLM``): biases on the q/k/v projections, always, and none on the output
  projection (ours: ``attention.bias: true, out_bias: false``); no MLP bias.
* ``qwen3`` (``Qwen3ForCausalLM``): QK-norm (a Llama-form RMSNorm over each head, before RoPE), ``head_dim``
  independent of ``hidden_size / num_attention_heads``, ``attention_bias`` on all four projections.

Everything else (sizes, RoPE and its scalings, norms, tied embeddings) is Llama's, so both directions go
through :class:`LlamaFamily` and change only the attention. Both families may slide a window over some layers:
``use_sliding_window`` with ``sliding_window``, on the layers from ``max_window_layers`` on, or as
``layer_types`` lists them. All layers, none, or every k-th global (:func:`model.hf_common.window_section`)
are supported; an export writes ``layer_types`` explicitly.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from model.hf_common import FULL, LAYER_NAME, SLIDING, layer_types, window_section
from model.hf_llama import LlamaFamily
from model.hf_llama_like import llama_problems, read_as_llama
from model.loading import Where
from specs.config_io import from_dict
from specs.model_config import ModelConfig

_QWEN_DEFAULTS: dict[str, Any] = {"max_position_embeddings": 32768, "use_sliding_window": False, "max_window_layers": 28}
_QK_NORM = {"attn.q_norm.weight": "self_attn.q_norm.weight", "attn.k_norm.weight": "self_attn.k_norm.weight"}


class _QwenFamily:
    """What Qwen 2 and Qwen 3 share; the subclasses say how their attention projections differ from Llama's."""

    model_type: str
    architecture: str
    base_prefix = "model."
    label: str
    qk_norm: bool
    defaults: dict[str, Any]
    ignored_keys: tuple[str, ...]  # Llama keys this family's transformers code does not read

    _llama = LlamaFamily()

    def projections_from_hf(self, values: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def projection_problems(self, cfg: ModelConfig) -> list[str]:
        raise NotImplementedError

    # ------------------------------------------------------------------------------------------------- import

    def config_from_hf(self, hf: dict[str, Any], *, name: str, dtype: str) -> ModelConfig:
        """Our config for this family's ``config.json``; every key it cannot honour is named in one ``ValueError``."""
        values = {**_QWEN_DEFAULTS, **self.defaults, **{k: v for k, v in hf.items() if v is not None}}
        data = read_as_llama(
            {k: v for k, v in values.items() if k not in self.ignored_keys}, label=self.label, name=name, dtype=dtype
        )
        n_layers = data["n_layers"]
        types = [FULL] * n_layers  # transformers drops the window without use_sliding_window, whatever layer_types say
        if values["use_sliding_window"]:
            types = values.get("layer_types") or [
                SLIDING if i >= values["max_window_layers"] else FULL for i in range(n_layers)
            ]
        try:
            windows = window_section(types, values.get("sliding_window"), n_layers=n_layers, max_seq_len=data["max_seq_len"])
        except ValueError as exc:
            raise ValueError(f"cannot import this {self.label} checkpoint:\n  {exc}") from None
        data["attention"].update(self.projections_from_hf(values), **windows)
        return from_dict(data, kind="model", source="Hugging Face config.json")

    def ignored(self, hf_name: str, cfg: ModelConfig) -> bool:
        return self._llama.ignored(hf_name, cfg)

    # ------------------------------------------------------------------------------------------------- export

    def _llama_view(self, cfg: ModelConfig) -> ModelConfig:
        """``cfg`` without what this family adds to Llama (biases, QK-norm, windows), for Llama's checks and
        ``config.json``."""
        attention = replace(cfg.attention, bias=False, out_bias=None, qk_norm=False, window=None, global_every=None)
        return replace(cfg, attention=attention, rope=cfg.rope and replace(cfg.rope, local_theta=None))

    def export_problems(self, cfg: ModelConfig) -> list[str]:
        """Why this family cannot express ``cfg`` (empty when it can)."""
        problems = llama_problems(self._llama_view(cfg), label=self.label)
        if cfg.rope is not None and cfg.rope.local_theta is not None:
            problems.append(f"rope.local_theta is set; {self.label} has one RoPE base")
        if cfg.mlp.bias:
            problems.append(f"mlp.bias is set; {self.label}'s MLP has no biases")
        if cfg.attention.qk_norm != self.qk_norm:
            having = "always has" if self.qk_norm else "has no"
            problems.append(f"attention.qk_norm is {cfg.attention.qk_norm}; {self.label} {having} QK-norm")
        return problems + self.projection_problems(cfg)

    def hf_config(self, cfg: ModelConfig, *, dtype: str) -> dict[str, Any]:
        """``config.json`` for this family (``cfg`` has passed :meth:`export_problems`): Llama's, adjusted."""
        config = self._llama.hf_config(self._llama_view(cfg), dtype=dtype)
        for key in ("mlp_bias", "pretraining_tp", *self.ignored_keys):
            config.pop(key, None)
        if "attention_bias" not in self.ignored_keys:
            config["attention_bias"] = cfg.attention.bias
        types = layer_types(cfg)
        sliding = SLIDING in types
        config.update(
            architectures=[self.architecture],
            model_type=self.model_type,
            use_sliding_window=sliding,
            sliding_window=cfg.attention.window if sliding else None,
            max_window_layers=types.index(SLIDING) if sliding else cfg.n_layers,
            layer_types=types,
        )
        return config

    # -------------------------------------------------------------------------------------------------- names

    def hf_name(self, name: str, cfg: ModelConfig) -> Where | None:
        """Llama's names, and Qwen 3's QK-norm weights."""
        match = LAYER_NAME.fullmatch(name)
        if self.qk_norm and match and match.group(2) in _QK_NORM:
            return f"model.layers.{match.group(1)}.{_QK_NORM[match.group(2)]}"
        return self._llama.hf_name(name, cfg)


class Qwen2Family(_QwenFamily):
    """``model_type: qwen2`` (``Qwen2ForCausalLM``)."""

    model_type = "qwen2"
    architecture = "Qwen2ForCausalLM"
    label = "Qwen 2"
    qk_norm = False
    defaults: dict[str, Any] = {}
    ignored_keys = ("attention_bias", "mlp_bias")  # Qwen 2's biases are fixed, whatever config.json says

    def projections_from_hf(self, values: dict[str, Any]) -> dict[str, Any]:
        return {"bias": True, "out_bias": False}

    def projection_problems(self, cfg: ModelConfig) -> list[str]:
        if cfg.attention.bias and not cfg.attention.output_bias:
            return []
        return [
            f"attention biases are q/k/v {cfg.attention.bias}, output {cfg.attention.output_bias}; Qwen 2 has "
            "q/k/v biases and no output bias"
        ]


class Qwen3Family(_QwenFamily):
    """``model_type: qwen3`` (``Qwen3ForCausalLM``)."""

    model_type = "qwen3"
    architecture = "Qwen3ForCausalLM"
    label = "Qwen 3"
    qk_norm = True
    defaults: dict[str, Any] = {"head_dim": 128}  # Qwen3Config's default, not hidden_size / heads
    ignored_keys = ("mlp_bias",)

    def projections_from_hf(self, values: dict[str, Any]) -> dict[str, Any]:
        return {"qk_norm": True}  # attention_bias was read as Llama reads it (all four projections)

    def projection_problems(self, cfg: ModelConfig) -> list[str]:
        if cfg.attention.bias == cfg.attention.output_bias:
            return []
        return ["attention.out_bias differs from attention.bias; Qwen 3's attention_bias covers all four projections"]
