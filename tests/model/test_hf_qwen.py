"""Hugging Face Qwen 2 and Qwen 3 interop, checked against ``transformers`` on the same weights (fp32, eager).

Tolerance ``TOL = 1e-5`` (``tests/model/conftest.py``); the measured differences are ~1e-6 (run with ``-s``).
"""

from __future__ import annotations

import json

import pytest
import torch
import transformers

import model
import specs
from model.hf import from_hf, to_hf
from tests.model.conftest import TOL, decode_diffs, edit_config, hf_model, ids, load_hf, model_diff, perturb_

TINY = dict(
    hidden_size=64,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    intermediate_size=176,
    vocab_size=256,
    max_position_embeddings=128,
)
FAMILIES = {
    "qwen2": (transformers.Qwen2ForCausalLM, transformers.Qwen2Config),
    "qwen3": (transformers.Qwen3ForCausalLM, transformers.Qwen3Config),
}
WINDOW = dict(use_sliding_window=True, sliding_window=5, max_window_layers=0)  # every layer slides, 5 < 16 tokens

IMPORT_CASES = {
    "qwen2": ("qwen2", {}),
    "qwen2-mha-tied": ("qwen2", dict(num_key_value_heads=4, tie_word_embeddings=True)),
    "qwen2-mqa-theta": ("qwen2", dict(num_key_value_heads=1, rope_parameters={"rope_type": "default", "rope_theta": 1e6})),
    "qwen2-sliding": ("qwen2", WINDOW),
    "qwen3-head-dim-32": ("qwen3", dict(head_dim=32)),
    "qwen3-bias-tied": ("qwen3", dict(head_dim=16, attention_bias=True, tie_word_embeddings=True)),
    "qwen3-sliding": ("qwen3", dict(head_dim=32, **WINDOW)),
}


def _hf(family: str, **overrides) -> torch.nn.Module:
    return hf_model(*FAMILIES[family], **{**TINY, **overrides})


@pytest.mark.parametrize("case", IMPORT_CASES)
def test_from_hf_matches_transformers(case, tmp_path):
    family, overrides = IMPORT_CASES[case]
    hf = _hf(family, **overrides)
    hf.save_pretrained(tmp_path, safe_serialization=True)
    ours = from_hf(tmp_path)
    attention = ours.config.attention
    if family == "qwen2":
        assert (attention.bias, attention.output_bias, attention.qk_norm) == (True, False, False)
        assert ours.layers[0].attn.wo.bias is None and ours.layers[0].attn.wq.bias is not None
    else:
        assert attention.qk_norm and attention.bias == attention.output_bias == overrides.get("attention_bias", False)
        assert ours.config.head_dim == overrides["head_dim"]
    assert attention.window == overrides.get("sliding_window") and attention.global_every is None
    assert ours.config.tie_embeddings == overrides.get("tie_word_embeddings", False)
    assert model_diff(ours, hf, ids(), case) <= TOL


@pytest.mark.parametrize("family", FAMILIES)
def test_cached_decode_with_a_short_window_equals_transformers_full_forward(family, tmp_path):
    hf = _hf(family, **WINDOW, **({"head_dim": 32} if family == "qwen3" else {}))
    hf.save_pretrained(tmp_path, safe_serialization=True)
    assert max(decode_diffs(from_hf(tmp_path), hf, ids(seed=3, seq=14), prefill=7)) <= TOL


def test_window_spanning_every_position_is_no_window(tmp_path):
    """Qwen 2 checkpoints ship sliding_window 131072 > max_position_embeddings: such a window hides nothing."""
    hf = _hf("qwen2", use_sliding_window=True, sliding_window=4096, max_window_layers=0)
    hf.save_pretrained(tmp_path, safe_serialization=True)
    ours = from_hf(tmp_path)
    assert ours.config.attention.window is None
    assert model_diff(ours, hf, ids(), "window >= max_seq_len") <= TOL


def test_window_off_without_use_sliding_window(tmp_path):
    _hf("qwen2").save_pretrained(tmp_path, safe_serialization=True)
    edit_config(tmp_path, sliding_window=4, use_sliding_window=False)
    assert from_hf(tmp_path).config.attention.window is None


def test_mixed_window_layers_are_refused_with_the_pattern(tmp_path):
    """max_window_layers=1: layer 0 global, layers 1-2 sliding, which global_every cannot express."""
    _hf("qwen2", use_sliding_window=True, sliding_window=5, max_window_layers=1).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"(?s)Qwen 2 checkpoint.*pattern GSS"):
        from_hf(tmp_path)


def test_unsupported_activation_names_the_family(tmp_path):
    _hf("qwen3", head_dim=16).save_pretrained(tmp_path)
    edit_config(tmp_path, hidden_act="gelu")
    with pytest.raises(ValueError, match=r"(?s)Qwen 3 checkpoint.*hidden_act 'gelu'"):
        from_hf(tmp_path)


# ------------------------------------------------------------------------------------------------------- export

EXPORT_CASES = {
    "qwen2": ("Qwen2ForCausalLM", ["attention.bias=true", "attention.out_bias=false"]),
    "qwen2-tied-sliding": (
        "Qwen2ForCausalLM",
        ["attention.bias=true", "attention.out_bias=false", "tie_embeddings=true", "attention.window=5"],
    ),
    "qwen3": ("Qwen3ForCausalLM", ["attention.qk_norm=true", "attention.head_dim=32"]),
    "qwen3-bias-linear-rope": (
        "Qwen3ForCausalLM",
        ["attention.qk_norm=true", "attention.bias=true", "rope.scaling=linear", "rope.factor=2.0"],
    ),
    "qwen3-gemma-pattern": ("Qwen3ForCausalLM", ["attention.qk_norm=true", "attention.window=5", "attention.global_every=2"]),
}


@pytest.mark.parametrize("case", EXPORT_CASES)
def test_to_hf_loads_in_transformers_with_identical_logits(case, tmp_path):
    architecture, overrides = EXPORT_CASES[case]
    cfg = specs.apply_overrides(specs.load_config("llama-tiny"), ["n_layers=3", *overrides])
    torch.manual_seed(0)
    ours = model.build(cfg)
    perturb_(ours, seed=4)
    ours.eval()
    out = to_hf(ours, tmp_path / "hf")
    written = json.loads((out / "config.json").read_text())
    assert written["architectures"] == [architecture]
    hf = load_hf(out)
    assert model_diff(ours, hf, ids(), f"to_hf {case}") <= TOL

    back = from_hf(out)  # our import of our export restores the config and the weights
    assert specs.to_dict(back.config) | {"name": ""} == specs.to_dict(cfg) | {"name": ""}
    for (name, a), (_, b) in zip(ours.state_dict().items(), back.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_a_model_no_family_can_express_is_refused_with_every_reason(tmp_path):
    cfg = specs.apply_overrides(
        specs.load_config("llama-tiny"), ["attention.bias=true", "attention.out_bias=false", "mlp.bias=true"]
    )
    with pytest.raises(ValueError) as err:
        to_hf(model.build(cfg), tmp_path / "hf")
    message = str(err.value)
    assert "llama: attention.out_bias differs from attention.bias" in message
    assert "qwen2: mlp.bias is set; Qwen 2's MLP has no biases" in message
    assert "qwen3: attention.qk_norm is False; Qwen 3 always has QK-norm" in message
