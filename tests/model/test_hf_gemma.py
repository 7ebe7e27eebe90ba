"""Hugging Face Gemma 2 and Gemma 3 (text) interop, checked against ``transformers`` on the same weights (fp32, eager).

Tolerance ``TOL = 1e-5`` (``tests/model/conftest.py``); run with ``-s`` for the measured differences. The
parameters are perturbed by 0.2 (not 0.05) so that soft-capping, the attention scale and the windows move
the logits well beyond the tolerance (checked by ``test_parity_is_not_vacuous``).
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import transformers

import model
import specs
from model.hf import from_hf, to_hf
from model.hf_common import layer_types
from tests.model.conftest import TOL, decode_diffs, edit_config, hf_model, ids, load_hf, model_diff, perturb_

TINY = dict(
    hidden_size=64,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=32,
    intermediate_size=176,
    vocab_size=256,
    max_position_embeddings=128,
    sliding_window=5,  # shorter than the 16 tokens compared
    query_pre_attn_scalar=24,
    attn_logit_softcapping=4.0,
    final_logit_softcapping=5.0,
)
GEMMA2 = (transformers.Gemma2ForCausalLM, transformers.Gemma2Config)


def _hf(**overrides) -> torch.nn.Module:
    return hf_model(*GEMMA2, scale=0.2, **{**TINY, **overrides})


IMPORT_CASES = {
    "gemma2": {},
    "untied-mha": dict(tie_word_embeddings=False, num_key_value_heads=4),
    "scalar-is-head-dim": dict(query_pre_attn_scalar=32),
    "no-softcaps": dict(attn_logit_softcapping=None, final_logit_softcapping=None),
    "exact-gelu-bias": dict(hidden_activation="gelu", attention_bias=True),
    "every-third-global": dict(num_hidden_layers=3, layer_types=["sliding_attention", "sliding_attention", "full_attention"]),
    "all-global": dict(layer_types=["full_attention"] * 4),
    "rope-theta-eps": dict(rope_parameters={"rope_type": "default", "rope_theta": 1000.0}, rms_norm_eps=1e-5),
}


@pytest.mark.parametrize("case", IMPORT_CASES)
def test_from_hf_matches_transformers(case, tmp_path):
    overrides = IMPORT_CASES[case]
    hf = _hf(**overrides)
    hf.save_pretrained(tmp_path, safe_serialization=True)
    ours = from_hf(tmp_path)
    cfg = ours.config
    assert (cfg.residual, cfg.norm_weight_offset, cfg.mlp.kind) == ("sandwich", 1.0, "geglu")
    assert cfg.embedding_scale == 64**0.5
    assert cfg.tie_embeddings == overrides.get("tie_word_embeddings", True)
    if cfg.tie_embeddings:
        assert ours.lm_head.weight is ours.tok_embeddings.weight
    assert [ours.layers[i].attn.window for i in range(cfg.n_layers)] == [
        5 if kind == "sliding_attention" else None for kind in hf.config.layer_types
    ]
    assert model_diff(ours, hf, ids(), case) <= TOL


def test_parity_is_not_vacuous(tmp_path):
    """Dropping any one Gemma feature from the imported config moves the logits far beyond the tolerance."""
    hf = _hf()
    hf.save_pretrained(tmp_path, safe_serialization=True)
    ours = from_hf(tmp_path)
    cfg, reference = ours.config, hf(ids()).logits.detach()
    without = {
        "window": dict(attention=dataclasses.replace(cfg.attention, window=None, global_every=None)),
        "attention softcap": dict(attention=dataclasses.replace(cfg.attention, softcap=None)),
        "scale": dict(attention=dataclasses.replace(cfg.attention, scale=None)),
        "final softcap": dict(final_softcap=None),
        "embedding scale": dict(embedding_scale=None),
    }
    for label, change in without.items():
        other = model.build(dataclasses.replace(cfg, **change))
        other.load_state_dict(ours.state_dict())
        with torch.no_grad():
            assert (other.eval()(ids()) - reference).abs().max() > 100 * TOL, label


def test_cached_decode_with_short_windows_equals_transformers_full_forward(tmp_path):
    hf = _hf()
    hf.save_pretrained(tmp_path, safe_serialization=True)
    assert max(decode_diffs(from_hf(tmp_path), hf, ids(seed=3, seq=14), prefill=7)) <= TOL


@pytest.mark.parametrize(("config_cls", "pattern"), [(transformers.Gemma2Config, 2), (transformers.Gemma3TextConfig, 6)])
def test_global_every_matches_transformers_layer_types(config_cls, pattern):
    """``AttentionConfig.layer_window``'s rule against the layer types transformers derives by default."""
    theirs = config_cls(num_hidden_layers=13, sliding_window=5).layer_types
    cfg = specs.apply_overrides(
        specs.load_config("llama-tiny"), ["n_layers=13", "attention.window=5", f"attention.global_every={pattern}"]
    )
    assert layer_types(cfg) == theirs


def test_bidirectional_and_unknown_activation_are_refused(tmp_path):
    _hf().save_pretrained(tmp_path)
    edit_config(tmp_path, use_bidirectional_attention=True, hidden_activation="silu")
    with pytest.raises(specs.CheckpointError) as err:
        from_hf(tmp_path)
    message = str(err.value)
    assert "use_bidirectional_attention is set" in message and "hidden_activation 'silu'" in message


def test_layer_pattern_global_every_cannot_express_is_refused(tmp_path):
    _hf().save_pretrained(tmp_path)
    edit_config(tmp_path, layer_types=["full_attention", "sliding_attention", "sliding_attention", "full_attention"])
    with pytest.raises(ValueError, match=r"(?s)Gemma 2 checkpoint.*pattern GSSG"):
        from_hf(tmp_path)


# ------------------------------------------------------------------------------------------------------- export

GEMMA2_OURS = [
    "n_layers=4",
    "attention.head_dim=32",
    "attention.window=5",
    "attention.global_every=2",
    "attention.softcap=4.0",
    "attention.scale=0.25",
    "residual=sandwich",
    "norm_weight_offset=1.0",
    "embedding_scale=8.0",
    "final_softcap=5.0",
    "mlp.kind=geglu",
    "mlp.gelu_approximate=tanh",
    "tie_embeddings=true",
]
EXPORT_CASES = {
    "gemma2": [],
    "untied-no-softcaps-exact-gelu": ["tie_embeddings=false", "final_softcap=null", "attention.softcap=null", "mlp.gelu_approximate=none"],
    "every-third-global-default-scale": ["attention.global_every=3", "attention.scale=null"],
}


@pytest.mark.parametrize("case", EXPORT_CASES)
def test_to_hf_loads_in_transformers_with_identical_logits(case, tmp_path):
    cfg = specs.apply_overrides(specs.load_config("llama-tiny"), [*GEMMA2_OURS, *EXPORT_CASES[case]])
    torch.manual_seed(0)
    ours = model.build(cfg)
    perturb_(ours, seed=4, scale=0.2)
    ours.eval()
    out = to_hf(ours, tmp_path / "hf")
    written = json.loads((out / "config.json").read_text())
    assert written["architectures"] == ["Gemma2ForCausalLM"]
    assert written["query_pre_attn_scalar"] == (16 if cfg.attention.scale else 32)
    hf = load_hf(out)
    assert model_diff(ours, hf, ids(), f"to_hf {case}") <= TOL

    back = from_hf(out)
    assert specs.to_dict(back.config) | {"name": ""} == specs.to_dict(cfg) | {"name": ""}
    for (name, a), (_, b) in zip(ours.state_dict().items(), back.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_export_refuses_what_gemma_2_cannot_express(tmp_path):
    cfg = specs.apply_overrides(
        specs.load_config("llama-tiny"), [*GEMMA2_OURS, "embedding_scale=2.0", "attention.scale=0.3", "mlp.bias=true"]
    )
    with pytest.raises(ValueError) as err:
        to_hf(model.build(cfg), tmp_path / "hf")
    message = str(err.value)
    for reason in (
        "gemma2: embedding_scale is 2.0; Gemma 2 scales by sqrt(d_model)",
        "gemma2: attention.scale 0.3 is not 1/sqrt of an integer",
        "gemma2: mlp is 'geglu' (bias True); Gemma 2 uses GeGLU without biases",
    ):
        assert reason in message


# ------------------------------------------------------------------------------------------------------ Gemma 3

GEMMA3 = (transformers.Gemma3ForCausalLM, transformers.Gemma3TextConfig)
TINY3 = {
    **{k: v for k, v in TINY.items() if k != "attn_logit_softcapping"},
    "num_hidden_layers": 7,  # six sliding layers, then a global one, then a sliding one
    "rope_theta": 100_000.0,
    "rope_local_base_freq": 1_000.0,  # the sliding layers' own base: a wrong table moves the logits far
}
GEMMA3_CASES = {
    "gemma3": {},
    "linear-scaled-global": dict(rope_scaling={"rope_type": "linear", "factor": 2.0}),
    "untied": dict(tie_word_embeddings=False),
}


@pytest.mark.parametrize("case", GEMMA3_CASES)
def test_gemma3_from_hf_and_back_matches_transformers(case, tmp_path):
    hf = hf_model(*GEMMA3, scale=0.2, **{**TINY3, **GEMMA3_CASES[case]})
    hf.save_pretrained(tmp_path / "theirs", safe_serialization=True)
    ours = from_hf(tmp_path / "theirs")
    cfg = ours.config
    assert (cfg.attention.qk_norm, cfg.attention.global_every, cfg.rope.local_theta) == (True, 6, 1_000.0)
    assert model_diff(ours, hf, ids(), case) <= TOL
    assert max(decode_diffs(ours, hf, ids(seed=3, seq=14), prefill=7)) <= TOL

    out = to_hf(ours, tmp_path / "back")
    assert json.loads((out / "config.json").read_text())["architectures"] == ["Gemma3ForCausalLM"]
    assert model_diff(ours, load_hf(out), ids(), f"to_hf {case}") <= TOL


def test_gemma3_local_base_is_not_vacuous(tmp_path):
    """Rotating the sliding layers with the global base instead moves the logits far beyond the tolerance."""
    hf = hf_model(*GEMMA3, scale=0.2, **TINY3)
    hf.save_pretrained(tmp_path, safe_serialization=True)
    ours = from_hf(tmp_path)
    cfg = ours.config
    other = model.build(dataclasses.replace(cfg, rope=dataclasses.replace(cfg.rope, local_theta=None)))
    other.load_state_dict(ours.state_dict())
    with torch.no_grad():
        assert (other.eval()(ids()) - hf(ids()).logits).abs().max() > 100 * TOL


def test_gemma3_sliding_layers_keep_their_base_when_the_window_spans_the_context(tmp_path):
    """A window as long as the context hides nothing, but Gemma 3's sliding layers still rotate with their own
    base: they must stay sliding layers, not become global ones rotating with the global base."""
    hf = hf_model(*GEMMA3, scale=0.2, **{**TINY3, "max_position_embeddings": 32, "sliding_window": 32})
    hf.save_pretrained(tmp_path, safe_serialization=True)
    ours = from_hf(tmp_path)
    assert (ours.config.attention.window, ours.config.rope.local_theta) == (32, 1_000.0)
    assert model_diff(ours, hf, ids(), "window spans the context") <= TOL
