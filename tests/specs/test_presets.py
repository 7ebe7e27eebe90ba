"""Presets shipped in specs/presets: every one loads, round-trips, and the named ones hold their recipes."""

from __future__ import annotations

import json

import pytest
import yaml

from specs import ModelConfig, dumps_config, from_dict, load_config, load_preset, preset_kinds, preset_names, to_dict


def test_expected_presets_are_shipped():
    assert {"llama-tiny", "llama-55m", "gpt-shakespeare-char", "gemma3-1b", "bert-1.7b"} <= set(preset_names())
    assert preset_names() == sorted(preset_names())


@pytest.mark.parametrize("name", preset_names())
def test_preset_loads_and_round_trips(name, tmp_path):
    cfg = load_preset(name)
    assert isinstance(cfg, ModelConfig)
    assert cfg.name == name
    assert load_config(name) == cfg
    assert load_preset(name, kind="model") == cfg
    for fmt in ("json", "yaml"):
        text = dumps_config(cfg, fmt)
        data = json.loads(text) if fmt == "json" else yaml.safe_load(text)
        assert from_dict(data) == cfg
    assert from_dict(to_dict(cfg)) == cfg


def _param_count(cfg: ModelConfig) -> int:
    """Parameters of a pre-norm decoder, from the config fields alone."""
    c, v, hd = cfg.d_model, cfg.vocab_size, cfg.head_dim
    hq, hkv = cfg.attention.n_heads, cfg.attention.kv_heads
    bias = cfg.attention.bias
    attn = c * hq * hd + 2 * c * hkv * hd + hq * hd * c
    if bias:
        attn += hq * hd + 2 * hkv * hd + c
    hidden = cfg.mlp_hidden
    if cfg.mlp.kind == "swiglu":
        mlp = 3 * c * hidden + (2 * hidden + c if cfg.mlp.bias else 0)
    else:
        mlp = 2 * c * hidden + (hidden + c if cfg.mlp.bias else 0)
    norm = c * (2 if cfg.norm == "layernorm" and cfg.norm_bias else 1)
    layer = attn + mlp + 2 * norm
    emb = v * c + (cfg.max_seq_len * c if cfg.positions == "learned" else 0)
    head = 0 if cfg.tie_embeddings else v * c
    return emb + cfg.n_layers * layer + (norm if cfg.final_norm else 0) + head


def test_llama_55m_parameter_count_by_hand():
    cfg = load_preset("llama-55m")
    c, v, layers = cfg.d_model, cfg.vocab_size, cfg.n_layers
    hq, hkv, hd = cfg.attention.n_heads, cfg.attention.n_kv_heads, cfg.head_dim
    assert (c, v, layers, hq, hkv, hd, cfg.mlp_hidden) == (512, 32000, 8, 8, 2, 64, 1408)
    embeddings = v * c
    head = v * c  # untied
    q, k, vv, o = c * hq * hd, c * hkv * hd, c * hkv * hd, hq * hd * c
    swiglu = 3 * c * cfg.mlp_hidden
    norms = 2 * c
    final_norm = c
    total = embeddings + head + layers * (q + k + vv + o + swiglu + norms) + final_norm
    assert total == 55_321_088
    assert _param_count(cfg) == 55_321_088


def test_llama_55m_recipe():
    cfg = load_preset("llama-55m")
    assert cfg.positions == "rope" and cfg.rope.theta == 10000.0 and cfg.rope.scaling == "none"
    assert cfg.mlp.kind == "swiglu" and cfg.norm == "rmsnorm" and not cfg.tie_embeddings
    assert cfg.max_seq_len == 2048 and cfg.residual == "pre"


def test_gpt_shakespeare_char_recipe():
    cfg = load_preset("gpt-shakespeare-char")
    assert cfg.n_layers == 4 and cfg.attention.n_heads == 4 and cfg.attention.kv_heads == 4
    assert cfg.d_model == 128 and cfg.max_seq_len == 64 and cfg.vocab_size == 65
    assert cfg.positions == "learned" and cfg.rope is None
    assert cfg.mlp.kind == "gelu" and cfg.mlp_hidden == 512 and not cfg.mlp.bias and not cfg.attention.bias
    assert cfg.norm == "layernorm" and not cfg.norm_bias and cfg.tie_embeddings
    # 65*128 tok + 64*128 pos + 4 layers * (4*128^2 attn + 2*128*512 mlp + 2*128 norms) + 128 final norm
    assert _param_count(cfg) == 65 * 128 + 64 * 128 + 4 * (4 * 128**2 + 2 * 128 * 512 + 2 * 128) + 128


def test_llama_tiny_is_small_gqa():
    cfg = load_preset("llama-tiny")
    assert cfg.attention.n_heads == 4 and cfg.attention.kv_heads == 2 and cfg.head_dim == 16
    assert cfg.vocab_size == 256 and cfg.n_layers == 2 and cfg.max_seq_len == 128
    assert _param_count(cfg) < 200_000


def test_bert_1_7b_recipe():
    cfg = load_preset("bert-1.7b")
    assert cfg.architecture == "encoder" and cfg.head == "mlm" and cfg.tie_embeddings
    assert (cfg.d_model, cfg.n_layers, cfg.attention.n_heads, cfg.mlp_hidden) == (2048, 32, 16, 8192)
    assert cfg.positions == "learned" and cfg.max_seq_len == 512 and cfg.type_vocab_size == 2
    assert cfg.residual == "post" and cfg.norm == "layernorm" and cfg.norm_bias and cfg.embedding_norm
    assert not cfg.final_norm and cfg.mlp.kind == "gelu" and cfg.mlp.bias and cfg.attention.bias


def test_preset_loads_are_independent():
    a, b = load_preset("llama-tiny"), load_preset("llama-tiny")
    assert a == b


@pytest.mark.parametrize("kind", [k for k in preset_kinds() if k != "model"])
def test_presets_of_other_kinds_load_and_round_trip(kind):
    for name in preset_names(kind):
        cfg = load_preset(name, kind=kind)
        assert cfg.KIND == kind and cfg.name == name
        assert from_dict(to_dict(cfg)) == cfg
