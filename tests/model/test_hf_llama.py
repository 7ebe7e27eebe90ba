"""Hugging Face Llama interop, checked against ``transformers`` itself on the same weights (fp32, eager)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import transformers
from safetensors import safe_open
from safetensors.torch import load_file

import model
import specs
from model.hf import from_hf, to_hf
from tests.model.conftest import (
    TINY_LLAMA,
    assert_same_model,
    edited_copy,
    load_hf,
    model_diff,
    perturb_,
    random_ids,
    tiny_hf,
)

TOL = 1e-5
TINY = dict(**TINY_LLAMA, max_position_embeddings=128)


def _hf_model(**overrides) -> torch.nn.Module:
    return tiny_hf(transformers.LlamaForCausalLM, transformers.LlamaConfig(**{**TINY, **overrides}, attn_implementation="eager"))


def _ids(seed: int = 2, batch: int = 2, seq: int = 16) -> torch.Tensor:
    return random_ids(TINY["vocab_size"], batch, seq, seed)


# ------------------------------------------------------------------------------------------------------- import

IMPORT_CASES = {
    "gqa": dict(num_key_value_heads=2),
    "mha": dict(num_key_value_heads=4),
    "mqa": dict(num_key_value_heads=1),
    "gqa-tied": dict(num_key_value_heads=2, tie_word_embeddings=True),
    "mha-tied": dict(num_key_value_heads=4, tie_word_embeddings=True),
    "rope-theta": dict(num_key_value_heads=2, rope_parameters={"rope_type": "default", "rope_theta": 500000.0}),
    "rope-linear": dict(
        num_key_value_heads=2, rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}
    ),
    "attention-bias": dict(num_key_value_heads=2, attention_bias=True),
    "mlp-bias-eps": dict(num_key_value_heads=1, mlp_bias=True, rms_norm_eps=1e-5),
    "head-dim-32": dict(num_key_value_heads=2, head_dim=32),
}


@pytest.mark.parametrize("case", IMPORT_CASES)
def test_from_hf_matches_transformers(case, tmp_path):
    overrides = IMPORT_CASES[case]
    hf = _hf_model(**overrides)
    hf.save_pretrained(tmp_path, safe_serialization=True)
    ours = from_hf(tmp_path)
    assert not ours.training
    cfg = ours.config
    assert cfg.attention.kv_heads == overrides["num_key_value_heads"]
    assert cfg.tie_embeddings == overrides.get("tie_word_embeddings", False)
    if overrides.get("tie_word_embeddings"):
        assert ours.lm_head.weight is ours.tok_embeddings.weight
        assert "lm_head.weight" not in load_file(tmp_path / "model.safetensors")
    if "rope_parameters" in overrides:
        rope = overrides["rope_parameters"]
        assert cfg.rope.theta == rope["rope_theta"]
        assert (cfg.rope.scaling, cfg.rope.factor) == (
            ("linear", 2.0) if rope["rope_type"] == "linear" else ("none", 1.0)
        )
    assert model_diff(ours, hf, _ids(), case) <= TOL


def test_from_hf_sharded(tmp_path):
    hf = _hf_model(num_key_value_heads=2)
    hf.save_pretrained(tmp_path, safe_serialization=True, max_shard_size="100KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    assert len(list(tmp_path.glob("model-*-of-*.safetensors"))) > 1
    assert model_diff(from_hf(tmp_path), hf, _ids(), "sharded") <= TOL


def test_from_hf_dtype_and_device(tmp_path):
    hf = _hf_model(num_key_value_heads=2)
    hf.save_pretrained(tmp_path, safe_serialization=True)
    ours = from_hf(tmp_path, dtype=torch.bfloat16, device="cpu")
    assert ours.config.dtype == "bfloat16"
    assert {p.dtype for p in ours.parameters()} == {torch.bfloat16}
    assert {p.device.type for p in ours.parameters()} == {"cpu"}


def test_imported_model_decodes_incrementally_like_hf_full_forward(tmp_path):
    hf = _hf_model(num_key_value_heads=2)
    hf.save_pretrained(tmp_path, safe_serialization=True)
    ours = from_hf(tmp_path)
    ids = _ids(seed=3, batch=2, seq=12)
    with torch.no_grad():
        reference = hf(ids).logits
        cache = ours.new_cache(2, 12)
        steps = [ours(ids[:, :8], cache=cache)]
        for t in range(8, 12):
            steps.append(ours(ids[:, t : t + 1], cache=cache))
    diffs = [(steps[0] - reference[:, :8]).abs().max().item()]
    diffs += [(step[:, 0] - reference[:, 8 + i]).abs().max().item() for i, step in enumerate(steps[1:])]
    print(f"incremental decode: max abs logit diffs per step {[f'{d:.3e}' for d in diffs]}")
    assert max(diffs) <= TOL


# ------------------------------------------------------------------------------------------------------- export

EXPORT_CASES = {
    "llama-tiny": [],
    "llama-tiny-tied": ["tie_embeddings=true"],
    "llama-tiny-linear-bias": [
        "rope.scaling=linear",
        "rope.factor=2.0",
        "rope.theta=500000.0",
        "attention.bias=true",
        "mlp.bias=true",
        "attention.n_kv_heads=1",
    ],
}


@pytest.mark.parametrize("case", EXPORT_CASES)
def test_to_hf_loads_in_transformers(case, tmp_path):
    cfg = specs.apply_overrides(specs.load_config("llama-tiny"), EXPORT_CASES[case])
    torch.manual_seed(0)
    ours = model.build(cfg)
    assert (ours.lm_head.weight is ours.tok_embeddings.weight) == cfg.tie_embeddings
    perturb_(ours, seed=4)
    ours.eval()
    out = to_hf(ours, tmp_path / "hf")
    assert out == tmp_path / "hf"
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    with safe_open(str(out / "model.safetensors"), framework="pt") as fh:
        assert fh.metadata() == {"format": "pt"}
        assert ("lm_head.weight" in fh.keys()) == (not cfg.tie_embeddings)
    written = json.loads((out / "config.json").read_text())
    assert written["architectures"] == ["LlamaForCausalLM"] and written["model_type"] == "llama"
    assert written["rope_theta"] == cfg.rope.theta == written["rope_parameters"]["rope_theta"]

    hf = load_hf(out)
    assert hf.config.tie_word_embeddings == cfg.tie_embeddings
    assert model_diff(ours, hf, _ids(), f"to_hf {case}") <= TOL

    back = from_hf(out)  # and our own import of our export restores the config and the weights
    assert_same_model(back, ours)


def test_to_hf_refuses_to_overwrite_unless_asked(tmp_path):
    ours = model.build(specs.load_config("llama-tiny"))
    to_hf(ours, tmp_path / "hf")
    with pytest.raises(FileExistsError):
        to_hf(ours, tmp_path / "hf")
    to_hf(ours, tmp_path / "hf", overwrite=True)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging leftovers


def test_to_hf_lists_every_reason_a_model_is_not_llama(tmp_path):
    ours = model.build(specs.load_config("gpt-shakespeare-char"))
    with pytest.raises(ValueError) as err:
        to_hf(ours, tmp_path / "hf")
    message = str(err.value)
    for reason in ("positions is 'learned'", "norm is 'layernorm'", "mlp.kind is 'gelu'"):
        assert reason in message
    assert not (tmp_path / "hf").exists()


def test_to_hf_rejects_qk_norm_softcap_window_post_norm(tmp_path):
    cfg = specs.apply_overrides(
        specs.load_config("llama-tiny"),
        [
            "attention.qk_norm=true",
            "attention.softcap=30.0",
            "attention.window=16",
            "residual=post",
            "rope.scaling=ntk",
            "rope.factor=2.0",
        ],
    )
    with pytest.raises(ValueError) as err:
        to_hf(model.build(cfg), tmp_path / "hf")
    for field in ("qk_norm", "softcap", "window", "residual", "rope.scaling"):
        assert field in str(err.value)


OTHER_FAMILIES_OPTIONS = {
    "embedding_scale=8.0": "embedding_scale is set; Llama does not scale its embeddings",
    "final_softcap=30.0": "final_softcap is set; Llama does not cap its logits",
    "attention.out_bias=true": "attention.out_bias differs from attention.bias",
    "norm_weight_offset=1.0": "norm_weight_offset is 1.0; Llama has none",
    "attention.scale=0.5": "attention.scale is 0.5; Llama scales by 1/sqrt(head_dim)",
    "type_vocab_size=2": "type_vocab_size is 2; Llama has no token types",
    "embedding_norm=true": "embedding_norm is set; Llama has no norm on the embeddings",
}


@pytest.mark.parametrize("override", OTHER_FAMILIES_OPTIONS)
def test_to_hf_refuses_options_of_other_families(override, tmp_path):
    """Each would be dropped silently by LlamaForCausalLM (a model that loads and computes something else)."""
    cfg = specs.apply_overrides(specs.load_config("llama-tiny"), [override])
    with pytest.raises(ValueError, match=f"llama: {re.escape(OTHER_FAMILIES_OPTIONS[override])}"):
        to_hf(model.build(cfg), tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


# ------------------------------------------------------------------------------------------------------- errors


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("hf")
    _hf_model(num_key_value_heads=2).save_pretrained(path, safe_serialization=True)
    return path


def test_unknown_model_type(saved, tmp_path):
    path = edited_copy(saved, tmp_path / "x", config_edit=lambda c: c.update(model_type="mamba"))
    with pytest.raises(ValueError, match=r"model_type 'mamba'.*supported: .*gpt2.*llama"):
        from_hf(path)


@pytest.mark.parametrize(
    ("rope_parameters", "message"),
    [
        ({"rope_type": "longrope", "short_factor": [1.0], "long_factor": [2.0]}, "RoPE type 'longrope' is not implemented"),
        ({"rope_type": "llama3", "factor": 8.0}, "llama3 RoPE scaling needs 'low_freq_factor', 'high_freq_factor'"),
        ({"rope_type": "dynamic"}, "dynamic RoPE scaling needs 'factor'"),
        ({"rope_type": "yarn", "factor": 2.0, "truncate": False}, "truncate: false"),
        ({"rope_type": "default", "partial_rotary_factor": 0.5}, "partial_rotary_factor 0.5"),
    ],
)
def test_unsupported_rope_settings_are_named(saved, tmp_path, rope_parameters, message):
    def edit(config):
        config["rope_parameters"] = {"rope_theta": 10000.0, **rope_parameters}

    path = edited_copy(saved, tmp_path / "x", config_edit=edit)
    with pytest.raises(ValueError, match=message):
        from_hf(path)


def test_legacy_4x_rope_fields(saved, tmp_path):
    def edit(config):
        del config["rope_parameters"]
        config.update(rope_theta=250000.0, rope_scaling={"type": "linear", "factor": 4.0})

    cfg = from_hf(edited_copy(saved, tmp_path / "x", config_edit=edit)).config
    assert (cfg.rope.theta, cfg.rope.scaling, cfg.rope.factor) == (250000.0, "linear", 4.0)


def test_hidden_act_must_be_silu(saved, tmp_path):
    path = edited_copy(saved, tmp_path / "x", config_edit=lambda c: c.update(hidden_act="gelu"))
    with pytest.raises(ValueError, match="hidden_act 'gelu'"):
        from_hf(path)


def test_missing_unexpected_and_misshapen_tensors_are_named(saved, tmp_path):
    def edit(tensors):
        del tensors["model.layers.1.mlp.up_proj.weight"]
        tensors["model.layers.0.self_attn.extra.weight"] = torch.zeros(2)
        tensors["model.norm.weight"] = torch.ones(65)

    with pytest.raises(specs.CheckpointError) as err:
        from_hf(edited_copy(saved, tmp_path / "x", tensors_edit=edit))
    assert sorted(err.value.problems) == [
        "missing tensor 'model.layers.1.mlp.up_proj.weight' (shape [176, 64]): not in model.safetensors",
        "model.safetensors: tensor 'model.norm.weight' has shape [65], the model built from config.json "
        "(LlamaForCausalLM) expects [64]",
        "model.safetensors: unexpected tensor 'model.layers.0.self_attn.extra.weight'; the model built from "
        "config.json (LlamaForCausalLM) has none",
    ]


def test_pickled_checkpoint_is_refused(saved, tmp_path):
    path = tmp_path / "x"
    path.mkdir()
    (path / "config.json").write_text((saved / "config.json").read_text())
    (path / "pytorch_model.bin").write_bytes(b"not unpickled")
    with pytest.raises(ValueError, match=r"pytorch_model\.bin.*never unpickles"):
        from_hf(path)


def test_tensors_hf_itself_ignores_are_tolerated(tmp_path):
    """A tied checkpoint that still stores ``lm_head.weight``, and old ``rotary_emb.inv_freq`` buffers."""
    hf = _hf_model(num_key_value_heads=2, tie_word_embeddings=True)
    hf.save_pretrained(tmp_path / "src", safe_serialization=True)

    def edit(tensors):
        tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"].clone()
        tensors["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(8)

    ours = from_hf(edited_copy(tmp_path / "src", tmp_path / "x", tensors_edit=edit))
    assert ours.lm_head.weight is ours.tok_embeddings.weight
    assert model_diff(ours, hf, _ids(), "tied with stored lm_head") <= TOL
