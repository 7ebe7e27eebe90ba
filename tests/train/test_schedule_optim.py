"""Learning-rate schedules (against the formulas written out here) and AdamW's parameter groups."""

from __future__ import annotations

import math

import pytest
import torch

import model
import specs
from specs import ScheduleConfig
from train import build_optimizer, lr_at, parameter_groups


def test_cosine_with_warmup_is_nanogpts_recipe():
    """lr 1e-3, warmup 100, cosine to 1e-4 at 2000: nanoGPT's get_lr, restated independently here."""
    cfg = ScheduleConfig(kind="cosine", warmup_steps=100, decay_steps=2000, min_lr=1e-4)

    def reference(it: int) -> float:
        if it < 100:
            return 1e-3 * (it + 1) / 101
        if it > 2000:
            return 1e-4
        ratio = (it - 100) / 1900
        return 1e-4 + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (1e-3 - 1e-4)

    for step in [0, 1, 50, 99, 100, 101, 500, 1000, 1999, 2000, 2500]:
        assert lr_at(step, cfg, 1e-3, 2000) == pytest.approx(reference(step), rel=1e-12, abs=1e-15), step


def test_linear_constant_and_default_decay_end():
    linear = ScheduleConfig(kind="linear", warmup_steps=10, min_lr=0.0)
    assert lr_at(10, linear, 1.0, 110) == 1.0
    assert lr_at(60, linear, 1.0, 110) == pytest.approx(0.5)
    assert lr_at(110, linear, 1.0, 110) == 0.0  # decay_steps defaults to max_steps
    constant = ScheduleConfig(kind="constant", warmup_steps=4)
    assert [lr_at(s, constant, 2.0, 100) for s in (0, 3, 4, 99)] == pytest.approx([0.4, 1.6, 2.0, 2.0])


def test_warmup_stable_decay():
    wsd = ScheduleConfig(kind="wsd", warmup_steps=10, decay_steps=110, min_lr=0.1, decay_fraction=0.2)
    assert lr_at(10, wsd, 1.0, 110) == 1.0
    assert lr_at(89, wsd, 1.0, 110) == 1.0  # stable until the last 20 of the 100 decay steps
    assert lr_at(90, wsd, 1.0, 110) == 1.0
    assert lr_at(100, wsd, 1.0, 110) == pytest.approx(0.55)
    assert lr_at(110, wsd, 1.0, 110) == pytest.approx(0.1)


def _model(preset: str, *overrides: str) -> torch.nn.Module:
    return model.build(specs.apply_overrides(specs.load_preset(preset), list(overrides)))


def test_decay_only_on_linear_weights_never_norms_biases_or_embeddings():
    m = _model("gpt-shakespeare-char", "attention.bias=true", "mlp.bias=true", "norm_bias=true")
    decay, no_decay = parameter_groups(m, 0.1)
    names = {id(p): n for n, p in m.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    kept = {names[id(p)] for p in no_decay["params"]}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(n.endswith(".weight") and ("attn.w" in n or "mlp." in n) for n in decayed), decayed
    assert "tok_embeddings.weight" in kept and "positions.embedding.weight" in kept  # tied head: the embedding
    assert all(n.endswith(".bias") or "norm" in n or "embedding" in n for n in kept), kept
    assert len(decayed) + len(kept) == len(list(m.parameters()))  # every parameter once, tied ones included


@pytest.mark.parametrize("implementation", ["auto", "fused", "foreach", "single"])
def test_optimizer_implementations_take_the_same_step(implementation):
    """The three PyTorch AdamW kernels agree (float32; they differ in op order only, ~1e-7)."""
    torch.manual_seed(0)
    reference = _model("llama-tiny")
    m = _model("llama-tiny")
    m.load_state_dict(reference.state_dict())
    results = []
    for net, impl in ((reference, "single"), (m, implementation)):
        opt = build_optimizer(net, specs.OptimizerConfig(lr=1e-2, implementation=impl))
        net(torch.arange(8)[None]).square().mean().backward()
        opt.step()
        results.append(torch.cat([p.detach().flatten() for p in net.parameters()]))
    torch.testing.assert_close(results[1], results[0], atol=1e-6, rtol=1e-5)
