"""Residual blocks (pre-norm, post-norm) recomputed by calling their submodules by hand, and DropPath.

The hand-wired expectations call the very same submodules in the documented order, so in float32 they are
bitwise identical; ``torch.equal`` is used (no tolerance) and any reordering or extra op would show.
"""

from __future__ import annotations

import pytest
import torch

import model
import specs
from attn.context import AttentionContext
from blocks import DropPath, PostNormBlock, PreNormBlock, build_block
from tensor.rope import rope_cos_sin, rope_inv_freq


def _cfg(*overrides: str) -> specs.ModelConfig:
    return specs.apply_overrides(specs.load_preset("llama-tiny"), list(overrides))


def _block(cfg: specs.ModelConfig, layer_idx: int = 0) -> torch.nn.Module:
    torch.manual_seed(0)
    block = build_block(cfg, layer_idx).eval()
    with torch.no_grad():
        for name, p in block.named_parameters():
            if p.dim() == 1:  # norm scales around 1, biases around 0: visible if applied in the wrong place
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.2 * torch.randn_like(p))
            else:
                p.normal_(0.0, 0.1)
    return block


def _inputs(cfg: specs.ModelConfig) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    x = torch.randn(2, 6, cfg.d_model, generator=torch.Generator().manual_seed(3))
    return x, rope_cos_sin(torch.arange(6), rope_inv_freq(cfg.head_dim, 10000.0))


@pytest.mark.parametrize("norm", ["rmsnorm", "layernorm"])
@torch.no_grad()
def test_pre_norm_block_wiring(norm: str) -> None:
    cfg = _cfg("residual=pre", f"norm={norm}")
    block = _block(cfg)
    assert isinstance(block, PreNormBlock)
    x, rope = _inputs(cfg)
    h = x + block.attn(block.attn_norm(x), AttentionContext(rope=rope))
    expected = h + block.mlp(block.mlp_norm(h))
    assert torch.equal(block(x, AttentionContext(rope=rope)), expected)


@pytest.mark.parametrize("norm", ["rmsnorm", "layernorm"])
@torch.no_grad()
def test_post_norm_block_wiring(norm: str) -> None:
    cfg = _cfg("residual=post", f"norm={norm}")
    block = _block(cfg)
    assert isinstance(block, PostNormBlock)
    x, rope = _inputs(cfg)
    h = block.attn_norm(x + block.attn(x, AttentionContext(rope=rope)))
    expected = block.mlp_norm(h + block.mlp(h))
    assert torch.equal(block(x, AttentionContext(rope=rope)), expected)


@torch.no_grad()
def test_pre_and_post_norm_differ() -> None:
    pre, post = _block(_cfg("residual=pre")), _block(_cfg("residual=post"))
    post.load_state_dict(pre.state_dict())
    x, rope = _inputs(_cfg())
    assert (pre(x, AttentionContext(rope=rope)) - post(x, AttentionContext(rope=rope))).abs().max() > 1e-2


@torch.no_grad()
def test_block_passes_mask_to_attention() -> None:
    cfg = _cfg()
    block = _block(cfg)
    x, rope = _inputs(cfg)
    allow = torch.ones(2, 1, 1, 6, dtype=torch.bool)
    allow[0, ..., :3] = False
    h = x + block.attn(block.attn_norm(x), AttentionContext(rope=rope, allow_mask=allow))
    assert torch.equal(block(x, AttentionContext(rope=rope, allow_mask=allow)), h + block.mlp(block.mlp_norm(h)))
    assert not torch.equal(
        block(x, AttentionContext(rope=rope, allow_mask=allow)), block(x, AttentionContext(rope=rope))
    )


def test_block_is_built_from_the_config() -> None:
    cfg = _cfg("attention.qk_norm=true", "norm=layernorm")
    block = build_block(cfg, 1)
    assert block.attn.layer_idx == 1
    assert block.attn.q_norm.eps == cfg.norm_eps  # QK-norm uses the model's eps
    assert isinstance(block.attn_norm, torch.nn.LayerNorm) and isinstance(block.mlp_norm, torch.nn.LayerNorm)


# -------------------------------------------------------------------------------------------------- DropPath


def test_drop_path_eval_is_identity() -> None:
    drop = DropPath(0.5).eval()
    x = torch.randn(8, 3, 4)
    assert torch.equal(drop(x), x)
    assert torch.equal(DropPath(0.0).train()(x), x)


def test_drop_path_drops_whole_samples_in_training() -> None:
    torch.manual_seed(0)
    p, n = 0.3, 4000
    out = DropPath(p).train()(torch.ones(n, 5, 7))
    per_sample = out.reshape(n, -1)
    # Each sample is all zero or all 1 / (1 - p): the whole branch is dropped or kept, rescaled.
    assert torch.equal(per_sample.amin(dim=1), per_sample.amax(dim=1))
    assert sorted(per_sample[:, 0].unique().tolist()) == [0.0, pytest.approx(1.0 / (1.0 - p))]
    dropped = (per_sample[:, 0] == 0).float().mean().item()
    # Binomial(4000, 0.3): sd of the fraction is ~0.0072; 5 sd of slack.
    assert abs(dropped - p) < 0.036
    assert abs(out.mean().item() - 1.0) < 0.06  # unbiased in expectation (sd ~0.0104 here, ~5 sd)


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5])
def test_drop_path_rejects_invalid_rates(p: float) -> None:
    with pytest.raises(ValueError, match="DropPath rate"):
        DropPath(p)


def test_drop_path_rate_grows_linearly_with_depth() -> None:
    cfg = _cfg("n_layers=5", "drop_path=0.2")
    m = model.build(cfg, device="meta")
    rates = [layer.branch_drop[1].p for layer in m.layers]
    assert rates[0] == 0.0
    assert rates[-1] == pytest.approx(0.2)
    assert rates == pytest.approx([0.2 * i / 4 for i in range(5)])


def test_drop_path_one_is_rejected_by_the_config() -> None:
    with pytest.raises(specs.ConfigError, match="drop_path"):
        _cfg("drop_path=1.0")


def test_branch_drop_in_training_drops_the_branch_per_sample() -> None:
    """With drop_path high, some samples of the last layer's output equal the plain residual input."""
    cfg = _cfg("n_layers=2", "drop_path=0.9")
    block = _block(cfg, layer_idx=1).train()  # rate 0.9 at the last layer
    x = torch.randn(64, 4, cfg.d_model)
    torch.manual_seed(1)
    with torch.no_grad():
        out = block(x)
    unchanged = [torch.equal(out[i], x[i]) for i in range(64)]
    assert 20 < sum(unchanged) < 64  # P(both branches dropped) = 0.81 per sample
