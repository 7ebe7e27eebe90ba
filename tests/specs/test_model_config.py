"""ModelConfig validation: unknown keys, wrong types and impossible combinations, each named by its field path."""

from __future__ import annotations

import copy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import specs
from specs import (
    AttentionConfig,
    ConfigError,
    FieldProblem,
    MLPConfig,
    ModelConfig,
    RoPEConfig,
    from_dict,
    load_preset,
    to_dict,
)

BASE = to_dict(load_preset("llama-tiny"))


def _with(**edits):
    """A copy of llama-tiny's dict with ``dotted.key=value`` edits (``...`` deletes the key)."""
    data = copy.deepcopy(BASE)
    for dotted, value in edits.items():
        *parents, leaf = dotted.split("__")
        node = data
        for part in parents:
            node = node[part]
        if value is ...:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    return data


def _problems(data):
    with pytest.raises(ConfigError) as info:
        from_dict(data)
    return info.value


def _only(data):
    err = _problems(data)
    assert len(err.problems) == 1, err.problems
    return err.problems[0]


# ------------------------------------------------------------------------------------------------ the happy path


def test_preset_values_and_derived_properties():
    cfg = load_preset("llama-tiny")
    assert cfg.head_dim == 16 and cfg.mlp_hidden == 176 and cfg.attention.kv_heads == 2
    assert cfg.rope == RoPEConfig(theta=10000.0)
    assert cfg.mlp == MLPConfig(kind="swiglu", hidden=176)


def test_defaults_fill_in():
    cfg = from_dict(
        {
            "kind": "model",
            "version": 2,
            "vocab_size": 10,
            "d_model": 8,
            "n_layers": 1,
            "max_seq_len": 4,
            "attention": {"n_heads": 2},
            "rope": {},
        }
    )
    assert cfg.mlp == MLPConfig() and cfg.mlp_hidden == 32
    assert cfg.attention.kv_heads == 2 and cfg.head_dim == 4
    assert cfg.positions == "rope" and cfg.rope == RoPEConfig()
    assert cfg.norm == "rmsnorm" and cfg.dtype == "float32" and cfg.name == ""


def test_explicit_head_dim_overrides_d_model_split():
    cfg = from_dict(_with(attention__head_dim=32, d_model=100))
    assert cfg.head_dim == 32


def test_configs_are_frozen_and_hashable():
    cfg = load_preset("llama-tiny")
    with pytest.raises(AttributeError):
        cfg.n_layers = 3  # type: ignore[misc]
    assert hash(cfg) == hash(load_preset("llama-tiny"))


def test_direct_construction_also_validates():
    with pytest.raises(FieldProblem, match="n_kv_heads"):
        AttentionConfig(n_heads=4, n_kv_heads=3)
    with pytest.raises(FieldProblem) as info:
        ModelConfig(vocab_size=8, d_model=8, n_layers=1, max_seq_len=4, attention=AttentionConfig(n_heads=2))
    assert info.value.field == "rope"
    assert isinstance(info.value, ValueError)


# ------------------------------------------------------------------------------------------------ unknown keys


@pytest.mark.parametrize(
    "edits, path, hint",
    [
        ({"vocab_sise": 3}, "vocab_sise", "did you mean 'vocab_size'?"),
        ({"attention__n_head": 4}, "attention.n_head", "did you mean 'n_heads'?"),
        ({"attention__n_kv_head": 2}, "attention.n_kv_head", "did you mean 'n_kv_heads'?"),
        ({"rope__thetta": 1.0}, "rope.thetta", "did you mean 'theta'?"),
        ({"mlp__hiden": 3}, "mlp.hiden", "did you mean 'hidden'?"),
    ],
)
def test_unknown_key_names_path_and_suggests(edits, path, hint):
    err = _problems(_with(**edits))
    assert err.problems == [(path, f"unknown key; {hint}")]
    assert f"{path}: unknown key; {hint}" in str(err)


def test_unknown_key_far_from_everything_lists_valid_keys():
    path, reason = _only(_with(attention__zzzzzz=1))
    assert path == "attention.zzzzzz"
    assert reason.startswith("unknown key; valid keys: n_heads, n_kv_heads, head_dim")


# ------------------------------------------------------------------------------------------------ wrong types


@pytest.mark.parametrize(
    "edits, path, expect",
    [
        ({"n_layers": "2"}, "n_layers", "valid integer"),
        ({"n_layers": 2.0}, "n_layers", "valid integer"),
        ({"n_layers": 2.5}, "n_layers", "valid integer"),
        ({"n_layers": True}, "n_layers", "valid integer"),
        ({"attention__n_heads": "4"}, "attention.n_heads", "valid integer"),
        ({"attention__n_kv_heads": 2.0}, "attention.n_kv_heads", "valid integer"),
        ({"attention__head_dim": "x"}, "attention.head_dim", "valid integer"),
        ({"tie_embeddings": 1}, "tie_embeddings", "valid boolean"),
        ({"tie_embeddings": "yes"}, "tie_embeddings", "valid boolean"),
        ({"attention__bias": 0}, "attention.bias", "valid boolean"),
        ({"dropout": True}, "dropout", "valid number"),
        ({"norm_eps": "1e-5"}, "norm_eps", "valid number"),
        ({"rope__theta": "big"}, "rope.theta", "valid number"),
        ({"name": 3}, "name", "valid string"),
        ({"mlp__kind": "relu"}, "mlp.kind", "'gelu', 'swiglu' or 'geglu'"),
        ({"positions": "alibi"}, "positions", "'rope', 'learned', 'sinusoidal' or 'none'"),
        ({"norm": "batchnorm"}, "norm", "'rmsnorm' or 'layernorm'"),
        ({"dtype": "float64"}, "dtype", "'float32', 'bfloat16' or 'float16'"),
        ({"attention": 4}, "attention", "object"),
        ({"mlp": "swiglu"}, "mlp", "object"),
        ({"rope": [1.0]}, "rope", "object"),
    ],
)
def test_wrong_type_names_path(edits, path, expect):
    got_path, reason = _only(_with(**edits))
    assert got_path == path
    assert expect in reason
    value = next(iter(edits.values()))
    assert f"(got {value!r})" in reason


@pytest.mark.parametrize("key", ["vocab_size", "d_model", "n_layers", "max_seq_len", "attention"])
def test_missing_required_field(key):
    assert _only(_with(**{key: ...})) == (key, "required field is missing")


def test_missing_nested_required_field():
    assert _only(_with(attention__n_heads=...)) == ("attention.n_heads", "required field is missing")


# ------------------------------------------------------------------------------------------------ combinations


@pytest.mark.parametrize(
    "edits, path, fragment",
    [
        ({"attention__n_kv_heads": 3}, "attention.n_kv_heads", "n_heads (4) must be divisible by n_kv_heads (3)"),
        ({"attention__n_kv_heads": 8}, "attention.n_kv_heads", "n_heads (4) must be divisible by n_kv_heads (8)"),
        ({"attention__n_kv_heads": 0}, "attention.n_kv_heads", "must be >= 1"),
        ({"attention__n_heads": 0}, "attention.n_heads", "must be >= 1"),
        ({"attention__head_dim": 0}, "attention.head_dim", "must be >= 1"),
        ({"attention__softcap": 0.0}, "attention.softcap", "must be > 0"),
        ({"attention__window": 0}, "attention.window", "must be >= 1"),
        ({"attention__window": 129}, "attention.window", "(129) exceeds max_seq_len (128)"),
        ({"attention__dropout": 1.0}, "attention.dropout", "must be in [0, 1)"),
        ({"attention__kernel": ""}, "attention.kernel", "unknown attention kernel ''; known: auto, manual, sdpa"),
        ({"attention__kernel": "flash"}, "attention.kernel", "unknown attention kernel 'flash'; known: auto, manual"),
        ({"attention__kernel": "spda"}, "attention.kernel", "'spda'; did you mean 'sdpa'?"),
        ({"d_model": 0}, "d_model", "must be >= 1, got 0"),
        ({"n_layers": 0}, "n_layers", "must be >= 1, got 0"),
        ({"attention__dropout": -0.1}, "attention.dropout", "must be in [0, 1), got -0.1"),
        ({"rope": ...}, "rope", "positions is 'rope' but no rope section is given"),
        ({"rope": None}, "rope", "positions is 'rope' but no rope section is given"),
        ({"positions": "learned"}, "rope", "is set but positions is 'learned'"),
        ({"positions": "none"}, "rope", "is set but positions is 'none'"),
        ({"attention__head_dim": 15}, "attention.head_dim", "RoPE needs an even head dim, got 15"),
        ({"d_model": 66}, "attention.head_dim", "d_model (66) is not divisible by n_heads (4); set head_dim"),
        ({"norm_bias": True}, "norm_bias", "RMSNorm has no bias"),
        ({"norm_eps": 0.0}, "norm_eps", "must be > 0"),
        ({"dropout": 1.0}, "dropout", "must be in [0, 1)"),
        ({"drop_path": -0.1}, "drop_path", "must be in [0, 1)"),
        ({"vocab_size": 0}, "vocab_size", "must be >= 1"),
        ({"max_seq_len": 0}, "max_seq_len", "must be >= 1"),
        ({"mlp__hidden": 0}, "mlp.hidden", "must be >= 1"),
        ({"rope__theta": 0.0}, "rope.theta", "must be > 0"),
        ({"rope__factor": 0.5}, "rope.factor", "must be >= 1"),
        ({"rope__factor": 2.0}, "rope.factor", "scaling is 'none'"),
        *[
            ({"rope__scaling": scaling, "rope__factor": 2.0}, "rope.original_max_seq_len", f"{scaling!r} scaling needs")
            for scaling in ("dynamic", "llama3", "yarn")
        ],
        ({"rope__original_max_seq_len": 0}, "rope.original_max_seq_len", "must be >= 1, got 0"),
        (
            {"rope__scaling": "llama3", "rope__factor": 8.0, "rope__original_max_seq_len": 64, "rope__low_freq_factor": 4.0},
            "rope.high_freq_factor",
            "(4.0) must exceed low_freq_factor (4.0)",
        ),
        ({"rope__beta_fast": 0.0}, "rope.beta_fast", "must be > 0"),
        ({"rope__attention_factor": 1.2}, "rope.attention_factor", "is a YaRN setting; scaling is 'none'"),
        (
            {"rope__scaling": "yarn", "rope__factor": 2.0, "rope__original_max_seq_len": 64, "rope__attention_factor": 0.0},
            "rope.attention_factor",
            "must be > 0",
        ),
        (
            {"rope__scaling": "yarn", "rope__factor": 2.0, "rope__original_max_seq_len": 64, "rope__theta": 1.0},
            "rope.theta",
            "YaRN needs theta > 1",
        ),
        ({"rope__local_theta": 100.0}, "rope.local_theta", "is set but no layer has a sliding window"),
        ({"rope__local_theta": 0.0, "attention__window": 8}, "rope.local_theta", "must be > 0"),
        (
            {"rope__scaling": "ntk", "rope__factor": 2.0, "attention__head_dim": 2},
            "attention.head_dim",
            "'ntk' RoPE scaling needs a head dim > 2",
        ),
    ],
)
def test_impossible_combinations(edits, path, fragment):
    got_path, reason = _only(_with(**edits))
    assert got_path == path
    assert fragment in reason


def test_legal_neighbours_of_the_rules():
    assert from_dict(_with(attention__window=128)).attention.window == 128
    assert from_dict(_with(attention__n_kv_heads=1)).attention.kv_heads == 1
    assert from_dict(_with(attention__n_kv_heads=4)).attention.kv_heads == 4
    assert from_dict(_with(attention__head_dim=15, positions="learned", rope=None)).head_dim == 15
    assert from_dict(_with(norm="layernorm", norm_bias=True)).norm_bias
    assert from_dict(_with(rope__scaling="linear", rope__factor=4.0)).rope.factor == 4.0
    assert from_dict(_with(d_model=66, attention__head_dim=16)).d_model == 66


def test_several_problems_reported_together_one_per_line():
    err = _problems(_with(n_layers="2", attention__n_head=4, tie_embeddings=1, vocab_sise=3))
    paths = [p for p, _ in err.problems]
    assert sorted(paths) == ["attention.n_head", "n_layers", "tie_embeddings", "vocab_sise"]
    lines = str(err).splitlines()
    assert lines[0] == "invalid config:"
    assert len(lines) == 1 + len(err.problems)
    for (path, reason), line in zip(err.problems, lines[1:], strict=True):
        assert line == f"  {path}: {reason}"


def test_problems_are_path_reason_pairs():
    err = _problems(_with(attention__n_kv_heads=3))
    assert err.problems == [("attention.n_kv_heads", "n_heads (4) must be divisible by n_kv_heads (3)")]
    assert err.source is None
    assert str(err) == "invalid config: attention.n_kv_heads: n_heads (4) must be divisible by n_kv_heads (3)"
    assert isinstance(err, ValueError)


# ------------------------------------------------------------------------------------------------ properties


@settings(max_examples=40, deadline=None)
@given(n_heads=st.integers(1, 64), n_kv_heads=st.integers(1, 64))
def test_gqa_divisibility_rule(n_heads, n_kv_heads):
    data = _with(attention__n_heads=n_heads, attention__n_kv_heads=n_kv_heads, attention__head_dim=8)
    if n_heads % n_kv_heads == 0:
        cfg = from_dict(data)
        assert cfg.attention.kv_heads == n_kv_heads
    else:
        path, reason = _only(data)
        assert path == "attention.n_kv_heads"
        assert f"({n_heads})" in reason and f"({n_kv_heads})" in reason


@settings(max_examples=30, deadline=None)
@given(window=st.integers(1, 300), max_seq_len=st.integers(1, 300))
def test_window_rule(window, max_seq_len):
    data = _with(attention__window=window, max_seq_len=max_seq_len)
    if window <= max_seq_len:
        assert from_dict(data).attention.window == window
    else:
        assert _only(data)[0] == "attention.window"


@pytest.mark.parametrize(
    ("override", "path"),
    [("norm_eps=.nan", "norm_eps"), ("rope.theta=.inf", "rope.theta"), ("init_std=-1", "init_std"),
     ("attention.softcap=.inf", "attention.softcap")],
)
def test_non_finite_and_negative_values_are_refused(override, path):
    with pytest.raises(specs.ConfigError, match=rf"{path}: "):
        specs.apply_overrides(specs.load_preset("llama-tiny"), [override])


def test_overrides_cannot_change_kind_or_version():
    for override in ("kind=generation", "version=1"):
        with pytest.raises(specs.ConfigError, match="is set by lmplanes, not by an override"):
            specs.apply_overrides(specs.load_preset("llama-tiny"), [override])


def test_malformed_override_value_is_a_config_error():
    with pytest.raises(specs.ConfigError, match=r"n_layers: value '\[1' is not valid YAML"):
        specs.apply_overrides(specs.load_preset("llama-tiny"), ["n_layers=[1"])
