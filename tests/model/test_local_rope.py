"""``rope.local_theta``: sliding-window layers rotate with their own RoPE base (Gemma 3), global layers with
the model's. Checked by what it changes (the windowed layers' outputs) and what it must not (the global
layers', and a model whose layers are all of one kind)."""

from __future__ import annotations

import pytest
import torch

import model
import specs
from attn.context import AttentionContext
from attn.self_attention import SelfAttention
from specs.model_config import AttentionConfig
from tensor.rope import rope_cos_sin, rope_inv_freq

# llama-tiny has 2 layers: with global_every=2, layer 0 has a window (local) and layer 1 attends globally.
MIXED = ["attention.window=6", "attention.global_every=2"]


def _model(*overrides: str) -> torch.nn.Module:
    cfg = specs.apply_overrides(specs.load_preset("llama-tiny"), [*overrides, "init_std=0.08"])
    torch.manual_seed(0)
    return model.build(cfg).eval()


def _ids(batch: int = 2, seq: int = 12, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (batch, seq), generator=torch.Generator().manual_seed(seed))


def test_attention_takes_the_local_table_only_when_windowed() -> None:
    cfg = AttentionConfig(n_heads=2, window=3, global_every=2)
    torch.manual_seed(0)
    windowed, global_ = (SelfAttention(cfg, 16, layer_idx=i) for i in (0, 1))
    assert (windowed.windowed, global_.windowed) == (True, False)
    x = torch.randn(1, 5, 16)
    positions = torch.arange(5)
    rope = rope_cos_sin(positions, rope_inv_freq(8, 10000.0))
    local = rope_cos_sin(positions, rope_inv_freq(8, 10.0))
    plain, both = AttentionContext(rope=rope), AttentionContext(rope=rope, local_rope=local)
    assert both.rope_for(True) is local and both.rope_for(False) is rope and plain.rope_for(True) is rope
    with torch.no_grad():
        assert not torch.allclose(windowed(x, both), windowed(x, plain))
        assert torch.equal(global_(x, both), global_(x, plain))
        assert torch.equal(windowed(x, AttentionContext(rope=local)), windowed(x, both))


@torch.no_grad()
def test_local_theta_changes_windowed_layers_only() -> None:
    """The same weights, run with and without a local base: each layer's attention on the same input."""
    m = _model(*MIXED, "rope.local_theta=100.0")
    assert isinstance(m.local_positions, torch.nn.Module)
    ids = _ids()
    positions = torch.arange(12).expand(2, -1)
    x, rope = m.positions(m.tok_embeddings(ids), positions)
    _, local = m.local_positions(x, positions)
    assert local is not None and not torch.allclose(local[0], rope[0])
    with_local, without = AttentionContext(rope=rope, local_rope=local), AttentionContext(rope=rope)
    windowed, global_ = m.layers[0].attn, m.layers[1].attn
    assert not torch.allclose(windowed(x, with_local), windowed(x, without))
    assert torch.equal(global_(x, with_local), global_(x, without))
    # And end to end the logits move (through layer 0).
    plain = _model(*MIXED)
    assert (m(ids) - plain(ids)).abs().max() > 1e-3


@torch.no_grad()
def test_all_local_is_the_model_with_that_base_and_all_global_ignores_it() -> None:
    ids = _ids()
    every_layer_windowed = _model("attention.window=6", "rope.local_theta=100.0")
    assert torch.equal(every_layer_windowed(ids), _model("attention.window=6", "rope.theta=100.0")(ids))
    no_layer_windowed = _model("attention.window=6", "attention.global_every=1", "rope.local_theta=100.0")
    assert torch.equal(no_layer_windowed(ids), _model("attention.window=6", "attention.global_every=1")(ids))


@pytest.mark.parametrize("fixed_shapes", [False, True])
@torch.no_grad()
def test_cached_decode_equals_full_forward_with_a_local_base(fixed_shapes: bool) -> None:
    m = _model(*MIXED, "rope.local_theta=100.0")
    ids = _ids(seq=14, seed=1)
    cache = m.new_cache(2, 16, fixed_shapes=fixed_shapes)
    stepped = torch.cat([m(ids[:, :9], cache=cache), *(m(ids[:, t : t + 1], cache=cache) for t in range(9, 14))], 1)
    torch.testing.assert_close(stepped, m(ids), atol=1e-5, rtol=0)


# Gemma 3's layout on 7 layers: every 6th layer global (base 1e6, scaled), the others sliding (base 1e4, unscaled).
GEMMA3_ROPES = {
    "linear": (["rope.scaling=linear", "rope.factor=8.0"], {"rope_type": "linear", "factor": 8.0}),
    "yarn": (
        ["rope.scaling=yarn", "rope.factor=4.0", "rope.original_max_seq_len=32"],
        {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32},
    ),
}


@pytest.mark.parametrize("case", GEMMA3_ROPES)
@torch.no_grad()
def test_each_layers_table_matches_gemma3(case: str) -> None:
    """Per layer, the table our attention takes equals the one transformers' Gemma 3 hands that layer: the
    window schedule picks the same layers, and the local base rotates unscaled (no YaRN factor either)."""
    transformers = pytest.importorskip("transformers")
    from transformers.models.gemma3.modeling_gemma3 import Gemma3RotaryEmbedding

    ours_rope, hf_rope = GEMMA3_ROPES[case]
    m = _model(
        "n_layers=7", "attention.window=8", "attention.global_every=6", "rope.theta=1000000.0",
        "rope.local_theta=10000.0", *ours_rope,
    )
    hf_cfg = transformers.Gemma3TextConfig(
        hidden_size=64, num_attention_heads=4, num_key_value_heads=4, head_dim=16, num_hidden_layers=7,
        sliding_window=8, max_position_embeddings=128,
        rope_parameters={
            "full_attention": {"rope_theta": 1000000.0, **hf_rope},
            "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
        },
    )
    hf = Gemma3RotaryEmbedding(hf_cfg)
    positions = torch.arange(100).expand(2, -1)  # past the original context of the yarn case
    x = torch.zeros(2, 100, 64)
    _, rope = m.positions(x, positions)
    _, local = m.local_positions(x, positions)
    ctx = AttentionContext(rope=rope, local_rope=local)
    for i, layer_type in enumerate(hf_cfg.layer_types):
        assert m.layers[i].attn.windowed == (layer_type == "sliding_attention"), i
        for ours, theirs in zip(ctx.rope_for(m.layers[i].attn.windowed), hf(x, positions, layer_type), strict=True):
            torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=0, msg=f"layer {i} ({layer_type})")
