"""Qwen 2 MoE (``Qwen2MoeForCausalLM``, tiny random config: a dense first layer, then sparse layers with a
gated shared expert, ``norm_topk_prob`` both ways) imported with ``model.from_hf`` gives transformers' logits,
cached decoding included, and its balance loss; our export loads in transformers and imports back.
Tolerances as in ``test_hf_mixtral.py`` (float32, weights perturbed at scale 0.2).
"""

from __future__ import annotations

import pytest
import torch

import model
import specs
from tests.model.conftest import TOL, VOCAB, assert_same_model, decode_diffs, hf_model, load_hf, perturb_

COEF = 0.02
RTOL = 1e-5
QWEN_MOE = dict(
    vocab_size=VOCAB, hidden_size=64, intermediate_size=80, moe_intermediate_size=24,
    shared_expert_intermediate_size=40, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
    num_experts=4, num_experts_per_tok=2, mlp_only_layers=[0], max_position_embeddings=64,
    router_aux_loss_coef=COEF, output_router_logits=True,
)


def _ids(seq: int = 21) -> torch.Tensor:
    return torch.randint(0, VOCAB, (2, seq), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("norm_topk_prob", [False, True])
@torch.no_grad()
def test_import_matches_logits_and_balance_loss(tmp_path, norm_topk_prob: bool) -> None:
    import transformers

    hf = hf_model(transformers.Qwen2MoeForCausalLM, transformers.Qwen2MoeConfig, scale=0.2,
                  **{**QWEN_MOE, "norm_topk_prob": norm_topk_prob})
    hf.save_pretrained(tmp_path)
    ours = model.from_hf(tmp_path)
    assert [type(layer.mlp).__name__ for layer in ours.layers] == ["SwiGLU", "MoE", "MoE"]
    assert ours.config.moe.normalize_top_k is norm_topk_prob
    expected = hf(_ids())
    out = ours(_ids(), output="all")
    torch.testing.assert_close(out.logits, expected.logits, atol=TOL, rtol=RTOL)
    torch.testing.assert_close(out.aux_losses["moe_balance"], COEF * expected.aux_loss, atol=1e-6, rtol=0)
    assert max(decode_diffs(ours, hf, _ids(12), prefill=5)) < TOL * 4


@torch.no_grad()
def test_export_loads_in_transformers_and_imports_back(tmp_path) -> None:
    cfg = specs.apply_overrides(
        specs.load_preset("llama-tiny"),
        ["max_seq_len=64", "n_layers=3", "attention.bias=true", "attention.out_bias=false",
         "moe={n_experts: 4, top_k: 2, expert_hidden: 24, n_shared_experts: 1, shared_expert_hidden: 40,"
         " shared_expert_gate: true, normalize_top_k: false, every: 2}"],
    )
    torch.manual_seed(0)
    ours = model.build(cfg).eval()
    perturb_(ours, seed=1, scale=0.2)
    model.to_hf(ours, tmp_path / "hf")
    hf = load_hf(tmp_path / "hf")
    assert type(hf).__name__ == "Qwen2MoeForCausalLM"
    torch.testing.assert_close(ours(_ids()), hf(_ids()).logits, atol=TOL, rtol=RTOL)
    assert_same_model(model.from_hf(tmp_path / "hf"), ours)
