"""The Qwen 2 MoE family of Hugging Face ``transformers`` (``Qwen2MoeForCausalLM``): Qwen 2's attention (q/k/v
biases, none on the output), with token-choice MoE feed-forwards plus one gated shared expert.

A sparse layer's ``mlp`` has a router ``gate`` over ``num_experts`` SwiGLU experts of width
``moe_intermediate_size`` (softmax, top ``num_experts_per_tok``, renormalised only with ``norm_topk_prob``),
dropless, plus a ``shared_expert`` of width ``shared_expert_intermediate_size`` scaled per token by
``sigmoid(shared_expert_gate(x))`` (ours: ``n_shared_experts: 1``, ``shared_expert_gate: true``). Layer ``i``
is sparse when ``(i + 1) % decoder_sparse_step == 0`` and ``i`` is not in ``mlp_only_layers``; the others have a
dense SwiGLU of width ``intermediate_size``. We express ``mlp_only_layers`` as a number of leading dense
layers (``first_dense_layers``), so only a prefix ``[0, k)`` is imported. Experts are stored one per tensor
(``experts.{e}.gate_proj.weight``), read and written as :class:`model.loading.Stacked` entries. The balance
loss weight is ``router_aux_loss_coef`` when ``output_router_logits`` is on, as for Mixtral.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from model.hf_common import LAYER_NAME, with_defaults
from model.hf_qwen import Qwen2Family
from model.loading import Stacked, Where
from specs.config_io import from_dict, to_dict
from specs.model_config import ModelConfig

# Qwen2MoeConfig's defaults for its own keys.
_DEFAULTS: dict[str, Any] = {
    "num_experts": 60,
    "num_experts_per_tok": 4,
    "moe_intermediate_size": 1408,
    "shared_expert_intermediate_size": 5632,
    "norm_topk_prob": False,
    "decoder_sparse_step": 1,
    "mlp_only_layers": [],
    "output_router_logits": False,
    "router_aux_loss_coef": 0.001,
    "qkv_bias": True,
}
_PROJ = {"w1": "gate_proj", "w3": "up_proj", "w2": "down_proj"}


class Qwen2MoeFamily:
    """``model_type: qwen2_moe`` (``Qwen2MoeForCausalLM``)."""

    model_type = "qwen2_moe"
    architecture = "Qwen2MoeForCausalLM"
    base_prefix = "model."

    _qwen = Qwen2Family()

    # ------------------------------------------------------------------------------------------------- import

    def config_from_hf(self, hf: dict[str, Any], *, name: str, dtype: str) -> ModelConfig:
        """Our config for a Qwen 2 MoE ``config.json``; every key it cannot honour is named in one ``ValueError``."""
        values = with_defaults(hf, _DEFAULTS)
        n_layers = values.get("num_hidden_layers")
        dense = sorted(values["mlp_only_layers"])
        problems = []
        if not values["qkv_bias"]:
            problems.append("qkv_bias false is not supported (Qwen 2 attention has q/k/v biases)")
        if dense != list(range(len(dense))):
            problems.append(f"mlp_only_layers {dense} is not supported; only the first k layers may be dense")
        if values["num_experts"] < 1 or values["shared_expert_intermediate_size"] < 1:
            problems.append("num_experts and shared_expert_intermediate_size must be >= 1 (a dense model is qwen2)")
        if problems:
            raise ValueError("cannot import this Qwen 2 MoE checkpoint:\n  " + "\n  ".join(problems))
        dense_view = {k: v for k, v in values.items() if k not in _DEFAULTS}
        data = to_dict(self._qwen.config_from_hf({**dense_view, "model_type": "qwen2"}, name=name, dtype=dtype))
        data["moe"] = {
            "n_experts": values["num_experts"],
            "top_k": values["num_experts_per_tok"],
            "normalize_top_k": values["norm_topk_prob"],
            "expert_hidden": values["moe_intermediate_size"],
            "n_shared_experts": 1,
            "shared_expert_hidden": values["shared_expert_intermediate_size"],
            "shared_expert_gate": True,
            "aux_loss_weight": float(values["router_aux_loss_coef"]) if values["output_router_logits"] else 0.0,
            "every": values["decoder_sparse_step"],
            "first_dense_layers": len(dense),
        }
        if n_layers is not None and not any(i >= len(dense) and (i + 1) % values["decoder_sparse_step"] == 0 for i in range(n_layers)):
            raise ValueError("cannot import this Qwen 2 MoE checkpoint:\n  no layer is sparse (a dense model is qwen2)")
        return from_dict(data, kind="model", source="Hugging Face config.json")

    def ignored(self, hf_name: str, cfg: ModelConfig) -> bool:
        return self._qwen.ignored(hf_name, cfg)

    # ------------------------------------------------------------------------------------------------- export

    def export_problems(self, cfg: ModelConfig) -> list[str]:
        """Why ``Qwen2MoeForCausalLM`` cannot express ``cfg`` (empty when it can)."""
        moe = cfg.moe
        if moe is None:
            return ["moe is not set; Qwen 2 MoE has sparse layers"]
        problems = [p.replace("Qwen 2", "Qwen 2 MoE") for p in self._qwen.export_problems(replace(cfg, moe=None))]
        checks = [
            (moe.routing != "token_choice", f"moe.routing is {moe.routing!r}; Qwen 2 MoE routes by token choice"),
            (moe.gate != "softmax", f"moe.gate is {moe.gate!r}; Qwen 2 MoE's router is a softmax"),
            (moe.capacity_factor is not None, "moe.capacity_factor is set; Qwen 2 MoE is dropless"),
            (
                moe.n_shared_experts != 1 or not moe.shared_expert_gate,
                "Qwen 2 MoE has exactly one shared expert, gated (moe.n_shared_experts: 1, shared_expert_gate: true)",
            ),
        ]
        return problems + [reason for failed, reason in checks if failed]

    def hf_config(self, cfg: ModelConfig, *, dtype: str) -> dict[str, Any]:
        """``config.json`` for ``Qwen2MoeForCausalLM`` (``cfg`` has passed :meth:`export_problems`)."""
        moe = cfg.moe
        assert moe is not None
        config = self._qwen.hf_config(replace(cfg, moe=None), dtype=dtype)
        config.update(
            architectures=[self.architecture],
            model_type=self.model_type,
            qkv_bias=True,
            num_experts=moe.n_experts,
            num_experts_per_tok=moe.top_k,
            norm_topk_prob=moe.normalize_top_k,
            moe_intermediate_size=moe.expert_hidden,
            shared_expert_intermediate_size=moe.shared_hidden,
            decoder_sparse_step=moe.every,
            mlp_only_layers=list(range(moe.first_dense_layers)),
            output_router_logits=moe.aux_loss_weight > 0,
            router_aux_loss_coef=moe.aux_loss_weight,
        )
        return config

    # -------------------------------------------------------------------------------------------------- names

    def hf_name(self, name: str, cfg: ModelConfig) -> Where | None:
        """Qwen 2's names; in sparse layers the router, the per-expert weights and the gated shared expert."""
        match = LAYER_NAME.fullmatch(name)
        if match is None or cfg.moe is None or not cfg.moe.is_moe_layer(int(match.group(1))):
            return self._qwen.hf_name(name, cfg)
        prefix, inner = f"model.layers.{match.group(1)}.mlp", match.group(2)
        parts = inner.split(".")
        if inner == "mlp.router.weight":
            return f"{prefix}.gate.weight"
        if inner == "mlp.shared.gate.weight":
            return f"{prefix}.shared_expert_gate.weight"
        if parts[:3] == ["mlp", "shared", "mlp"] and parts[3] in _PROJ and parts[4:] == ["weight"]:
            return f"{prefix}.shared_expert.{_PROJ[parts[3]]}.weight"
        if parts[:2] == ["mlp", "experts"] and parts[2] in _PROJ and len(parts) == 3:
            return Stacked(tuple(f"{prefix}.experts.{e}.{_PROJ[parts[2]]}.weight" for e in range(cfg.moe.n_experts)))
        if not inner.startswith("mlp."):
            return self._qwen.hf_name(name, cfg)
        return None
