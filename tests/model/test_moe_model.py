"""MoE decoders as a whole: the auxiliary losses reach the trainer's loss, are right under activation
checkpointing, and DropPath, bf16 autocast and weight tying work (cached decoding: the ``moe`` variant of
``test_decode_equals_forward.py``).

Tolerances: float32 comparisons of the same arithmetic (checkpointed vs plain: identical ops, so ~0 observed;
1e-6 allowed). bf16 autocast vs float32: bfloat16 keeps 8 bits of mantissa, so logits of size ~1 differ by
~1e-2; 0.1 is allowed, and the routing itself (taken in float32 from bf16 router logits) may flip a near-tie.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

import model
import specs
import train.wrappers as wrappers
from train import Trainer
from train.loss import lm_loss

MOE = (
    "moe={n_experts: 4, top_k: 2, expert_hidden: 48, n_shared_experts: 1, capacity_factor: 1.0,"
    " aux_loss_weight: 0.05, z_loss_weight: 0.01, first_dense_layers: 1}"
)


def _cfg(*overrides: str) -> specs.ModelConfig:
    return specs.apply_overrides(specs.load_preset("llama-tiny"), ["n_layers=3", MOE, *overrides])


def _build(cfg: specs.ModelConfig, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return model.build(cfg)


def _batch(cfg: specs.ModelConfig, seed: int = 0) -> specs.Batch:
    ids = torch.randint(0, cfg.vocab_size, (3, 17), generator=torch.Generator().manual_seed(seed))
    return specs.Batch(input_ids=ids[:, :-1], labels=ids[:, 1:])


def _grads(m: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}


def test_layers_follow_the_config() -> None:
    m = _build(_cfg())
    kinds = [type(layer.mlp).__name__ for layer in m.layers]
    assert kinds == ["SwiGLU", "MoE", "MoE"]
    # every parameter is initialised (build materialises from meta, then init_weights)
    assert all(torch.isfinite(p).all() and p.abs().sum() > 0 for p in m.parameters())


def test_lm_loss_includes_the_aux_losses_and_reports_the_dropped_fraction() -> None:
    cfg = _cfg()
    m = _build(cfg).train()
    loss, parts = lm_loss(m, _batch(cfg))
    assert set(parts) == {"ce", "moe_balance", "moe_z", "moe_dropped"}
    torch.testing.assert_close(loss.detach(), parts["ce"] + parts["moe_balance"] + parts["moe_z"])
    assert parts["moe_balance"] > 0 and parts["moe_z"] > 0 and 0 <= parts["moe_dropped"] < 1
    # the router learns from the aux losses alone
    out = m(_batch(cfg).input_ids, output="hidden")
    grad = torch.autograd.grad(sum(out.aux_losses.values()), m.layers[1].mlp.router.weight)[0]
    assert grad.abs().sum() > 0


def test_aux_losses_and_gradients_are_the_same_under_activation_checkpointing() -> None:
    cfg = _cfg()
    plain = _build(cfg).train()
    checkpointed = wrappers.apply_activation_checkpointing(copy.deepcopy(plain))
    batch = _batch(cfg)
    results = []
    for m in (plain, checkpointed):
        loss, parts = lm_loss(m, batch)
        loss.backward()
        results.append((parts, _grads(m)))
    (parts_a, grads_a), (parts_b, grads_b) = results
    assert parts_a.keys() == parts_b.keys()
    for key in parts_a:
        torch.testing.assert_close(parts_a[key], parts_b[key], atol=1e-6, rtol=0)
    assert grads_a.keys() == grads_b.keys() == {n for n, _ in plain.named_parameters()}
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], atol=1e-6, rtol=0, msg=name)


def test_the_trainer_trains_a_moe_model_with_bf16_and_checkpointing(tmp_path) -> None:
    cfg = specs.apply_overrides(
        specs.load_config("gpt-shakespeare-char", kind="train"),
        ["max_steps=4", "eval_every=4", "eval_batches=1", "schedule.warmup_steps=1", "schedule.decay_steps=4",
         "precision=bfloat16", "activation_checkpointing=true", "compile=false", "model.mlp.kind=swiglu",
         MOE.replace("moe=", "model.moe=").replace("first_dense_layers: 1", "every: 2")],
    )
    result = Trainer(cfg, tmp_path / "run", model.STORE, progress=False).fit()
    assert math.isfinite(result.final_train_loss) and result.final_train_loss < 4.5


def test_drop_path() -> None:
    """Training drops whole branches (MoE ones included); eval is the model without DropPath exactly."""
    cfg = _cfg("drop_path=0.5")
    m, plain = _build(cfg), _build(_cfg())
    plain.load_state_dict(m.state_dict())
    ids = _batch(cfg).input_ids
    m.eval(), plain.eval()
    with torch.no_grad():
        torch.testing.assert_close(m(ids), plain(ids), atol=0, rtol=0)
    m.train()
    torch.manual_seed(1)
    a = m(ids)
    torch.manual_seed(2)
    b = m(ids)
    assert (a - b).abs().max() > 1e-3
    lm_loss(m, _batch(cfg))[0].backward()
    assert all(p.grad is not None for p in m.parameters())


def test_bf16_autocast() -> None:
    cfg = _cfg("moe.capacity_factor=null")  # dropless: a near-tie flipped by bf16 cannot drop a token
    m = _build(cfg).train()
    batch = _batch(cfg)
    with torch.no_grad():
        reference = m(batch.input_ids, output="all")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(batch.input_ids, output="all")
        loss, parts = lm_loss(m, batch)
    loss.backward()
    assert out.logits.dtype == torch.bfloat16
    assert (out.logits.float() - reference.logits).abs().max() < 0.1
    for key, value in reference.aux_losses.items():
        assert out.aux_losses[key].item() == pytest.approx(value.item(), rel=0.05)
    assert all(torch.isfinite(p.grad).all() for p in m.parameters())


def test_weight_tying_survives_a_checkpoint(tmp_path) -> None:
    cfg = _cfg("tie_embeddings=true")
    m = _build(cfg).eval()
    assert m.lm_head.weight is m.tok_embeddings.weight
    model.save_checkpoint(m, tmp_path / "ckpt")
    loaded = model.load_checkpoint(tmp_path / "ckpt").eval()
    assert loaded.lm_head.weight is loaded.tok_embeddings.weight
    ids = _batch(cfg).input_ids
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids), m(ids), atol=0, rtol=0)
    assert model.count_parameters(cfg) == sum(p.numel() for p in m.parameters())


def moe_layer_parameters(moe: specs.MoEConfig, d_model: int) -> int:
    """The analytic size of one MoE feed-forward: router, routed SwiGLU experts, shared experts and their gate."""
    shared = 3 * d_model * moe.shared_hidden + (d_model if moe.shared_expert_gate else 0)
    return moe.n_experts * d_model + 3 * moe.n_experts * d_model * moe.expert_hidden + shared


@pytest.mark.parametrize(
    "moe",
    [
        "{n_experts: 4, top_k: 2, expert_hidden: 48}",
        "{n_experts: 8, top_k: 1, expert_hidden: 16, n_shared_experts: 2, shared_expert_hidden: 24,"
        " shared_expert_gate: true, every: 2, first_dense_layers: 1}",
    ],
)
def test_parameter_count_follows_the_formula(moe: str) -> None:
    cfg = specs.apply_overrides(specs.load_preset("llama-tiny"), ["n_layers=5", f"moe={moe}"])
    dense = specs.apply_overrides(cfg, ["moe=null"])
    n_moe = sum(cfg.moe.is_moe_layer(i) for i in range(cfg.n_layers))
    dense_mlp = 3 * cfg.d_model * cfg.mlp_hidden
    expected = model.count_parameters(dense) + n_moe * (moe_layer_parameters(cfg.moe, cfg.d_model) - dense_mlp)
    assert model.count_parameters(cfg) == expected


@torch.no_grad()
def test_a_deltanet_hybrid_with_moe_decodes_like_its_full_forward() -> None:
    """The seed's qwen3_mini shape (Gated DeltaNet hybrid + MoE): decoding through the hybrid cache equals the
    full forward (the tolerance of ``test_hybrid_deltanet.py``: chunked vs recurrent DeltaNet, observed 5e-6),
    and the forward still returns its balance loss."""
    cfg = specs.apply_overrides(
        specs.load_preset("llama-tiny"),
        ["n_layers=4", "init_std=0.08", "deltanet={n_heads: 2, head_k_dim: 16, n_value_heads: 4, hybrid_ratio: 3}",
         "moe={n_experts: 4, top_k: 2, expert_hidden: 48, n_shared_experts: 1, aux_loss_weight: 0.01}"],
    )
    m = _build(cfg).eval()
    ids = _batch(cfg).input_ids[:2, :13]
    cache = m.new_cache(2, 16)
    steps = [m(ids[:, :5], cache=cache)] + [m(ids[:, t : t + 1], cache=cache) for t in range(5, 13)]
    torch.testing.assert_close(torch.cat(steps, dim=1), m(ids), atol=1e-5, rtol=0)
    assert "moe_balance" in m(ids, output="hidden").aux_losses
