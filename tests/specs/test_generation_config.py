"""GenerationConfig: defaults, the rules and their error paths, and the v1 migration."""

from __future__ import annotations

import pytest

from specs import ConfigError, GenerationConfig, from_dict, to_dict


def _gen(version: int = 2, **fields):
    return {"kind": "generation", "version": version, **fields}


def test_defaults_are_greedy():
    cfg = from_dict(_gen())
    assert cfg == GenerationConfig()
    assert not cfg.do_sample and cfg.temperature == 1.0 and cfg.max_new_tokens == 32 and cfg.num_beams == 1


def test_sampling_config_loads():
    cfg = from_dict(_gen(do_sample=True, temperature=0.8, top_k=40, top_p=0.95, min_p=0.05, repetition_penalty=1.1,
                         eos_token_ids=[2, 3], stop=["\n\n"], seed=7))
    assert cfg.eos_token_ids == (2, 3) and cfg.stop == ("\n\n",)
    assert to_dict(cfg)["eos_token_ids"] == [2, 3] and cfg.fill_id == 2


@pytest.mark.parametrize(
    ("v1", "v2"),
    [
        ({}, GenerationConfig()),
        ({"temperature": 0.0}, GenerationConfig()),
        ({"temperature": 0.7, "top_k": 5, "seed": 1}, GenerationConfig(do_sample=True, temperature=0.7, top_k=5, seed=1)),
    ],
)
def test_version_1_files_migrate(v1, v2):
    assert from_dict(_gen(version=1, **v1)) == v2


@pytest.mark.parametrize(
    "fields, path, fragment",
    [
        ({"max_new_tokens": 0}, "max_new_tokens", "must be >= 1"),
        ({"temperature": 0.0}, "temperature", "greedy decoding is do_sample: false"),
        ({"do_sample": True, "top_k": 0}, "top_k", "must be >= 1"),
        ({"do_sample": True, "top_p": 0.0}, "top_p", "must be in (0, 1]"),
        ({"do_sample": True, "min_p": 1.5}, "min_p", "must be in [0, 1]"),
        ({"repetition_penalty": 0.0}, "repetition_penalty", "must be > 0"),
        ({"frequency_penalty": 3.0}, "frequency_penalty", "must be in [-2, 2]"),
        ({"top_k": 50}, "top_k", "only applies when sampling"),
        ({"num_beams": 0}, "num_beams", "must be >= 1"),
        ({"num_beams": 2, "do_sample": True}, "num_beams", "not supported"),
        ({"n": 2}, "n", "greedy decoding gives one answer"),
        ({"stop": [""]}, "stop", "must not be empty"),
        ({"max_new_tokens": "32"}, "max_new_tokens", "valid integer"),
        ({"eos_token_ids": 2}, "eos_token_ids", "valid array"),
        ({"seed": 1.5}, "seed", "valid integer"),
        ({"temprature": 1.0}, "temprature", "did you mean 'temperature'?"),
    ],
)
def test_generation_rules(fields, path, fragment):
    with pytest.raises(ConfigError) as info:
        from_dict(_gen(**fields))
    assert len(info.value.problems) == 1, info.value.problems
    got_path, reason = info.value.problems[0]
    assert got_path == path
    assert fragment in reason


def test_generation_config_rejects_model_kind():
    with pytest.raises(ConfigError, match="expected a 'model' config, got 'generation'"):
        from_dict(_gen(), kind="model")
