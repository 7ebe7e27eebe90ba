"""Parity with ``transformers``' Mixtral (``MixtralForCausalLM``, tiny random config): our decoder with a
``moe`` section of the same meaning, given the same weights, gives the same logits, and its ``moe_balance``
auxiliary loss equals Hugging Face's ``router_aux_loss_coef * aux_loss`` (``output_router_logits=True``).

The weights are copied in memory (attention and norms under Llama's names, which Mixtral shares; the router
and the experts from Mixtral's fused ``gate_up_proj``/``down_proj``); a ``from_hf`` import of Mixtral
checkpoint files is not built yet. Tolerance: float32, ``TOL`` of the other Hugging Face tests plus a relative
1e-5: the weights are perturbed strongly (scale 0.2, so the routing is far from uniform) and logits reach ~4,
where float32 summation-order differences of a few ulps reach ~1e-5 (observed max 1.1e-5 absolute, 3e-6
relative).
"""

from __future__ import annotations

import pytest
import torch

import model
import specs
from model.hf_llama import LlamaFamily
from tests.model.conftest import TOL, VOCAB, hf_model

COEF = 0.02
MIXTRAL = dict(
    vocab_size=VOCAB, hidden_size=64, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2, max_position_embeddings=64,
    router_aux_loss_coef=COEF, output_router_logits=True,
)


def _ours(hf: torch.nn.Module, top_k: int) -> torch.nn.Module:
    cfg = specs.apply_overrides(
        specs.load_preset("llama-tiny"),
        ["max_seq_len=64", "rope.theta=1000000.0", "norm_eps=1e-5",
         f"moe={{n_experts: 4, top_k: {top_k}, expert_hidden: 48, aux_loss_weight: {COEF}}}"],
    )
    m = model.build(cfg, device="meta")
    hf_state = hf.state_dict()
    state = {}
    for name in m.state_dict():
        layer, _, rest = name.removeprefix("layers.").partition(".")
        prefix = f"model.layers.{layer}.mlp"
        if rest == "mlp.router.weight":
            state[name] = hf_state[f"{prefix}.gate.weight"]
        elif rest in ("mlp.experts.w1", "mlp.experts.w3"):
            gate, up = hf_state[f"{prefix}.experts.gate_up_proj"].chunk(2, dim=1)
            state[name] = gate if rest.endswith("w1") else up
        elif rest == "mlp.experts.w2":
            state[name] = hf_state[f"{prefix}.experts.down_proj"]
        else:
            state[name] = hf_state[LlamaFamily().hf_name(name, cfg)]
    m.load_state_dict({k: v.clone() for k, v in state.items()}, assign=True)
    return m.eval()


@pytest.mark.parametrize("top_k", [1, 2])
@torch.no_grad()
def test_logits_and_balance_loss_match_mixtral(top_k: int) -> None:
    import transformers

    hf = hf_model(transformers.MixtralForCausalLM, transformers.MixtralConfig, scale=0.2,
                  **{**MIXTRAL, "num_experts_per_tok": top_k})
    ours = _ours(hf, top_k)
    ids = torch.randint(0, VOCAB, (2, 23), generator=torch.Generator().manual_seed(0))
    expected = hf(ids)
    out = ours(ids, output="all")
    torch.testing.assert_close(out.logits, expected.logits, atol=TOL, rtol=1e-5)
    torch.testing.assert_close(out.aux_losses["moe_balance"], COEF * expected.aux_loss, atol=1e-6, rtol=0)
    # not vacuous: the routing is far from uniform, so a loss over the wrong statistics would differ
    assert abs(expected.aux_loss.item() - top_k) > 1e-3
