"""Mixtral (``MixtralForCausalLM``, tiny random config) both ways: ``model.from_hf`` of a ``save_pretrained``
directory gives transformers' logits and its load-balancing loss (``moe_balance == router_aux_loss_coef *
aux_loss`` with ``output_router_logits=True``), cached decoding included; ``model.to_hf`` of our MoE model
loads in transformers with every tensor used, gives our logits, and imports back to the same model.

Tolerance: float32, ``TOL`` of the other Hugging Face tests plus a relative 1e-5: the weights are perturbed
strongly (scale 0.2, so the routing is far from uniform) and logits reach ~4, where float32 summation-order
differences of a few ulps reach ~1e-5 (observed max 1.1e-5 absolute, 3e-6 relative).
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

import model
import specs
from tests.model.conftest import TOL, VOCAB, assert_same_model, decode_diffs, edit_config, hf_model, load_hf, perturb_

COEF = 0.02
MIXTRAL = dict(
    vocab_size=VOCAB, hidden_size=64, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2, max_position_embeddings=64,
    router_aux_loss_coef=COEF, output_router_logits=True,
)
RTOL = 1e-5  # see the module docstring


def _hf(top_k: int = 2) -> torch.nn.Module:
    import transformers

    return hf_model(transformers.MixtralForCausalLM, transformers.MixtralConfig, scale=0.2,
                    **{**MIXTRAL, "num_experts_per_tok": top_k})


def _ids(seq: int = 23) -> torch.Tensor:
    return torch.randint(0, VOCAB, (2, seq), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("top_k", [1, 2])
@torch.no_grad()
def test_import_matches_logits_and_balance_loss(tmp_path, top_k: int) -> None:
    hf = _hf(top_k)
    hf.save_pretrained(tmp_path)
    ours = model.from_hf(tmp_path)
    assert ours.config.moe == specs.MoEConfig(n_experts=4, top_k=top_k, expert_hidden=48, aux_loss_weight=COEF)
    expected = hf(_ids())
    out = ours(_ids(), output="all")
    torch.testing.assert_close(out.logits, expected.logits, atol=TOL, rtol=RTOL)
    torch.testing.assert_close(out.aux_losses["moe_balance"], COEF * expected.aux_loss, atol=1e-6, rtol=0)
    # not vacuous: the routing is far from uniform, so a loss over the wrong statistics would differ
    assert abs(expected.aux_loss.item() - top_k) > 1e-3
    assert max(decode_diffs(ours, hf, _ids(12), prefill=5)) < TOL * 4


def test_without_output_router_logits_the_import_trains_without_the_balance_loss(tmp_path) -> None:
    _hf().save_pretrained(tmp_path)
    edit_config(tmp_path, output_router_logits=False)
    assert model.from_hf(tmp_path).config.moe.aux_loss_weight == 0.0
    edit_config(tmp_path, router_jitter_noise=0.1)
    with pytest.raises(specs.CheckpointError, match="router_jitter_noise"):
        model.from_hf(tmp_path)


@torch.no_grad()
def test_export_loads_in_transformers_and_imports_back(tmp_path) -> None:
    cfg = specs.apply_overrides(
        specs.load_preset("llama-tiny"),
        ["max_seq_len=64", "moe={n_experts: 4, top_k: 2, expert_hidden: 40, aux_loss_weight: 0.01}"],
    )
    torch.manual_seed(0)
    ours = model.build(cfg).eval()
    perturb_(ours, seed=1, scale=0.2)
    model.to_hf(ours, tmp_path / "hf")
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["model_type"] == "mixtral"
    hf = load_hf(tmp_path / "hf")
    torch.testing.assert_close(ours(_ids()), hf(_ids()).logits, atol=TOL, rtol=RTOL)
    back = model.from_hf(tmp_path / "hf")
    # every layer is MoE, so the dense ``mlp`` section is unused; Mixtral keeps none (ours reads the experts' width)
    assert back.config.mlp.hidden == 40
    ours.config = dataclasses.replace(ours.config, mlp=back.config.mlp)
    assert_same_model(back, ours)


@pytest.mark.parametrize(
    ("override", "reason"),
    [
        ("moe.capacity_factor=1.0", "dropless"),
        ("moe.n_shared_experts=1", "shared experts"),
        ("moe.gate=sigmoid", "softmax"),
        ("moe.first_dense_layers=1", "every Mixtral layer"),
    ],
)
def test_export_refuses_what_mixtral_cannot_express(tmp_path, override: str, reason: str) -> None:
    cfg = specs.apply_overrides(
        specs.load_preset("llama-tiny"), ["moe={n_experts: 4, top_k: 2, expert_hidden: 40}", override]
    )
    with pytest.raises(ValueError, match=reason):
        model.to_hf(model.build(cfg), tmp_path / "hf")
