"""The Mixtral family of Hugging Face ``transformers`` (``MixtralForCausalLM``): Llama's attention, norms and
RoPE, with every feed-forward a token-choice MoE.

Each layer's ``block_sparse_moe`` has a router ``gate`` (no bias) over ``num_local_experts`` SwiGLU experts of
width ``intermediate_size``; a token takes its ``num_experts_per_tok`` experts by softmax score, renormalised
over the chosen ones, with no capacity limit (ours: ``moe`` with ``gate: softmax``, ``normalize_top_k: true``,
``capacity_factor: null``, every layer). Checkpoint files store each expert apart
(``experts.{e}.w1.weight``: the gate, ``w3`` the up, ``w2`` the down projection), which our batched
``(E, out, in)`` weights read and write as :class:`model.loading.Stacked` entries. transformers 5 fuses them
in memory (``gate_up_proj``) but saves this layout; a checkpoint stored in the fused layout is not read.

Training settings: the balance loss is added by transformers only with ``output_router_logits``, weighted by
``router_aux_loss_coef`` (ours: ``aux_loss_weight``, 0 when the flag is off); ``router_jitter_noise`` (noise
on the router input in training) is not implemented and refused; our ``z_loss_weight`` has no Mixtral key
and is not exported. ``sliding_window``, when set, applies to every layer.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from model.hf_common import LAYER_NAME, with_defaults
from model.hf_llama import LlamaFamily
from model.hf_llama_like import llama_problems, read_as_llama
from model.loading import Stacked, Where
from specs.config_io import from_dict
from specs.model_config import MLPConfig, ModelConfig

# MixtralConfig's defaults where they differ from Llama's, and its own keys.
_DEFAULTS: dict[str, Any] = {
    "max_position_embeddings": 4096 * 32,
    "rms_norm_eps": 1e-5,
    "num_local_experts": 8,
    "num_experts_per_tok": 2,
    "output_router_logits": False,
    "router_aux_loss_coef": 0.001,
    "router_jitter_noise": 0.0,
}
_MIXTRAL_KEYS = (  # keys Llama does not know, kept from its reader
    "num_local_experts", "num_experts_per_tok", "output_router_logits", "router_aux_loss_coef",
    "router_jitter_noise", "sliding_window",
)
_DEFAULT_THETA = 1e6  # MixtralConfig's rope_theta (Llama's is 1e4)
_MOE = "block_sparse_moe"


class MixtralFamily:
    """``model_type: mixtral`` (``MixtralForCausalLM``)."""

    model_type = "mixtral"
    architecture = "MixtralForCausalLM"
    base_prefix = "model."

    _llama = LlamaFamily()

    # ------------------------------------------------------------------------------------------------- import

    def config_from_hf(self, hf: dict[str, Any], *, name: str, dtype: str) -> ModelConfig:
        """Our config for a Mixtral ``config.json``; every key it cannot honour is named in one ``ValueError``."""
        values = with_defaults(hf, _DEFAULTS)
        if "rope_theta" not in values and "rope_parameters" not in values:
            values["rope_theta"] = _DEFAULT_THETA
        if values["router_jitter_noise"]:
            raise ValueError(
                f"cannot import this Mixtral checkpoint:\n  router_jitter_noise {values['router_jitter_noise']} is "
                "not supported (only 0)"
            )
        data = read_as_llama(
            {k: v for k, v in values.items() if k not in _MIXTRAL_KEYS}, label="Mixtral", name=name, dtype=dtype
        )
        data["moe"] = {
            "n_experts": values["num_local_experts"],
            "top_k": values["num_experts_per_tok"],
            "expert_hidden": values["intermediate_size"],
            "aux_loss_weight": float(values["router_aux_loss_coef"]) if values["output_router_logits"] else 0.0,
        }
        if values.get("sliding_window") is not None:
            data["attention"]["window"] = values["sliding_window"]
        return from_dict(data, kind="model", source="Hugging Face config.json")

    def ignored(self, hf_name: str, cfg: ModelConfig) -> bool:
        return self._llama.ignored(hf_name, cfg)

    # ------------------------------------------------------------------------------------------------- export

    def export_problems(self, cfg: ModelConfig) -> list[str]:
        """Why ``MixtralForCausalLM`` cannot express ``cfg`` (empty when it can)."""
        moe = cfg.moe
        if moe is None:
            return ["moe is not set; every Mixtral layer is a mixture of experts"]
        problems = llama_problems(self._llama_view(cfg), label="Mixtral")
        checks = [
            (moe.routing != "token_choice", f"moe.routing is {moe.routing!r}; Mixtral routes by token choice"),
            (moe.gate != "softmax", f"moe.gate is {moe.gate!r}; Mixtral's router is a softmax"),
            (not moe.normalize_top_k, "moe.normalize_top_k is false; Mixtral renormalises the chosen experts' weights"),
            (moe.n_shared_experts > 0, "moe.n_shared_experts is set; Mixtral has no shared experts"),
            (moe.capacity_factor is not None, "moe.capacity_factor is set; Mixtral is dropless"),
            (moe.every != 1 or moe.first_dense_layers != 0, "moe leaves dense layers; every Mixtral layer is MoE"),
            (cfg.attention.global_every is not None, "attention.global_every is set; Mixtral's window covers every layer"),
        ]
        return problems + [reason for failed, reason in checks if failed]

    def _llama_view(self, cfg: ModelConfig) -> ModelConfig:
        """``cfg`` as Llama would see it: the experts' width as the MLP's, no MoE, no window."""
        assert cfg.moe is not None
        return replace(
            cfg,
            moe=None,
            mlp=MLPConfig(kind="swiglu", hidden=cfg.moe.expert_hidden),
            attention=replace(cfg.attention, window=None, global_every=None),
        )

    def hf_config(self, cfg: ModelConfig, *, dtype: str) -> dict[str, Any]:
        """``config.json`` for ``MixtralForCausalLM`` (``cfg`` has passed :meth:`export_problems`)."""
        assert cfg.moe is not None
        config = self._llama.hf_config(self._llama_view(cfg), dtype=dtype)
        for key in ("mlp_bias", "attention_bias", "pretraining_tp"):
            config.pop(key)
        config.update(
            architectures=[self.architecture],
            model_type=self.model_type,
            num_local_experts=cfg.moe.n_experts,
            num_experts_per_tok=cfg.moe.top_k,
            output_router_logits=cfg.moe.aux_loss_weight > 0,
            router_aux_loss_coef=cfg.moe.aux_loss_weight,
            router_jitter_noise=0.0,
            sliding_window=cfg.attention.window,
        )
        return config

    # -------------------------------------------------------------------------------------------------- names

    def hf_name(self, name: str, cfg: ModelConfig) -> Where | None:
        """Llama's names for attention, norms and embeddings; the router and the per-expert weights."""
        match = LAYER_NAME.fullmatch(name)
        if match is None or not match.group(2).startswith("mlp.") or cfg.moe is None:
            return self._llama.hf_name(name, cfg)
        prefix, inner = f"model.layers.{match.group(1)}.{_MOE}", match.group(2)
        if inner == "mlp.router.weight":
            return f"{prefix}.gate.weight"
        if inner in ("mlp.experts.w1", "mlp.experts.w2", "mlp.experts.w3"):
            proj = inner.rsplit(".", 1)[1]
            return Stacked(tuple(f"{prefix}.experts.{e}.{proj}.weight" for e in range(cfg.moe.n_experts)))
        return None
