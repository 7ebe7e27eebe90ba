"""Model config v1 (flat, nanoGPT style) -> v2 (nested) migration, from real v1 files."""

from __future__ import annotations

import pytest
import yaml

import specs
from specs import AttentionConfig, ConfigError, MLPConfig, dump_config, from_dict, load_config, load_preset, to_dict


def test_v1_llama_tiny_file_equals_the_preset(data_dir):
    path = data_dir / "llama-tiny.v1.yaml"
    assert yaml.safe_load(path.read_text(encoding="utf-8"))["version"] == 1
    cfg = load_config(path)
    assert cfg == load_preset("llama-tiny")
    assert to_dict(cfg)["version"] == 4


def test_v1_llama_tiny_file_resaves_as_v2(data_dir, tmp_path):
    cfg = load_config(data_dir / "llama-tiny.v1.yaml")
    out = dump_config(cfg, tmp_path / "llama-tiny.v2.yaml")
    data = yaml.safe_load(out.read_text(encoding="utf-8"))
    assert data["version"] == 4 and data["attention"]["n_kv_heads"] == 2 and data["mlp"]["kind"] == "swiglu"
    assert "n_heads" not in data and "rope_theta" not in data
    assert load_config(out) == cfg


def test_v1_gelu_learned_positions_file(data_dir):
    cfg = load_config(data_dir / "gpt-char.v1.yaml", kind="model")
    assert cfg.positions == "learned" and cfg.rope is None
    assert cfg.attention == AttentionConfig(n_heads=4, bias=True)
    assert cfg.mlp == MLPConfig(kind="gelu", bias=True)
    assert cfg.norm == "layernorm" and cfg.norm_bias and cfg.tie_embeddings and cfg.dropout == 0.1
    assert cfg.vocab_size == 65 and cfg.d_model == 128 and cfg.n_layers == 4 and cfg.max_seq_len == 64


def _v1(**fields):
    base = {
        "kind": "model",
        "version": 1,
        "vocab_size": 32,
        "d_model": 16,
        "n_layers": 1,
        "max_seq_len": 8,
        "n_heads": 2,
    }
    return {**base, **fields}


def test_v1_defaults_to_rope_with_default_theta():
    cfg = from_dict(_v1())
    assert cfg.positions == "rope" and cfg.rope.theta == 10000.0
    assert cfg.mlp == MLPConfig() and cfg.attention == AttentionConfig(n_heads=2)


def test_v1_rope_theta_and_kernel_carry_over():
    cfg = from_dict(_v1(rope_theta=500000.0, attn_kernel="sdpa", n_kv_heads=1, mlp_hidden=40))
    assert cfg.rope.theta == 500000.0
    assert cfg.attention == AttentionConfig(n_heads=2, n_kv_heads=1, kernel="sdpa")
    assert cfg.mlp.hidden == 40


def test_v1_rope_theta_ignored_without_rope_positions():
    cfg = from_dict(_v1(positions="sinusoidal", rope_theta=123.0))
    assert cfg.positions == "sinusoidal" and cfg.rope is None


def test_v1_errors_are_reported_in_v2_terms():
    with pytest.raises(ConfigError) as info:
        from_dict(_v1(n_kv_heads=3, n_heads=4))
    assert info.value.problems[0][0] == "attention.n_kv_heads"
    with pytest.raises(ConfigError) as info:
        from_dict({k: v for k, v in _v1().items() if k != "n_heads"})
    assert info.value.problems == [("attention.n_heads", "required field is missing")]
    with pytest.raises(ConfigError, match="mlp.kind"):
        from_dict(_v1(mlp="relu"))


def test_v1_unknown_key_still_rejected():
    with pytest.raises(ConfigError, match="n_layer: unknown key; did you mean 'n_layers'"):
        from_dict(_v1(n_layer=3))


def test_v1_file_without_kind_needs_kind_argument(data_dir, tmp_path):
    data = yaml.safe_load((data_dir / "llama-tiny.v1.yaml").read_text(encoding="utf-8"))
    del data["kind"]
    path = tmp_path / "nokind.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(ConfigError, match="kind: missing"):
        load_config(path)
    assert load_config(path, kind="model") == load_preset("llama-tiny")


def test_v1_file_with_wrong_kind(data_dir):
    with pytest.raises(ConfigError, match="expected a 'generation' config, got 'model'") as info:
        load_config(data_dir / "llama-tiny.v1.yaml", kind="generation")
    assert str(data_dir / "llama-tiny.v1.yaml") in str(info.value)


def test_v1_file_without_version(tmp_path, data_dir):
    data = yaml.safe_load((data_dir / "llama-tiny.v1.yaml").read_text(encoding="utf-8"))
    del data["version"]
    path = tmp_path / "noversion.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(ConfigError, match="version: missing"):
        load_config(path)


def test_newer_version_file(tmp_path):
    path = dump_config(load_preset("llama-tiny"), tmp_path / "v4.json")
    path.write_text(path.read_text(encoding="utf-8").replace('"version": 4', '"version": 5'), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems == [("version", "5 is newer than this lmplanes understands (4); upgrade lmplanes")]
    assert str(path) in str(info.value)


def test_a_v1_file_with_v2_sections_is_refused_not_silently_merged():
    data = {"kind": "model", "version": 1, "vocab_size": 10, "d_model": 64, "n_layers": 2, "max_seq_len": 8,
            "n_heads": 4, "attention": {"n_heads": 8}}
    with pytest.raises(specs.ConfigError, match=r"version: the file says version 1 but has v2 sections \(attention\)"):
        specs.from_dict(data)


@pytest.mark.parametrize(
    ("key", "value", "new_path"),
    [("rope_theta", 500000.0, "rope.theta"), ("n_kv_heads", 2, "attention.n_kv_heads"), ("mlp_hidden", 64, "mlp.hidden")],
)
def test_a_version_2_file_with_a_version_1_key_is_told_so(key, value, new_path):
    """Not a wrong did-you-mean ('rope' for rope_theta): the key is v1's, so say how to fix it."""
    data = to_dict(load_preset("llama-tiny"))
    data[key] = value
    with pytest.raises(ConfigError) as info:
        from_dict(data)
    ((path, reason),) = info.value.problems
    assert path == key
    assert reason == (
        f"unknown key; this looks like a version 1 key: set `version: 1` (it is migrated on load), or move it to "
        f"`{new_path}`"
    )


def test_a_v3_file_means_what_it_meant_and_may_not_use_v4_fields():
    base = {"kind": "model", "version": 3, "vocab_size": 10, "d_model": 64, "n_layers": 4, "max_seq_len": 8,
            "attention": {"n_heads": 4}, "rope": {"theta": 10000.0}}
    cfg = specs.from_dict(base)
    assert (cfg.moe, cfg.deltanet, cfg.encoder_layers, cfg.position_offset, cfg.mlp.dropout) == (None, None, None, 0, 0.0)
    moe = {**base, "moe": {"n_experts": 4, "top_k": 2, "expert_hidden": 32}}
    with pytest.raises(specs.ConfigError, match=r"version: the file says version 3 but uses v4 fields \(moe\); set version: 4"):
        specs.from_dict(moe)
    assert specs.from_dict({**moe, "version": 4}).moe.n_experts == 4
    with pytest.raises(specs.ConfigError, match=r"v4 fields \(mlp.dropout\)"):
        specs.from_dict({**base, "mlp": {"dropout": 0.1}})
