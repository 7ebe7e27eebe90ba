"""GenerationConfig: defaults, the sampling rules and their error paths."""

from __future__ import annotations

import pytest

from specs import ConfigError, GenerationConfig, from_dict, to_dict


def _gen(**fields):
    return {"kind": "generation", "version": 1, **fields}


def test_defaults_are_greedy():
    cfg = from_dict(_gen())
    assert cfg == GenerationConfig()
    assert cfg.temperature == 0.0 and cfg.top_k is None and cfg.top_p is None and cfg.max_new_tokens == 32


def test_sampling_config_loads():
    cfg = from_dict(_gen(temperature=0.8, top_k=40, top_p=0.95, repetition_penalty=1.1, eos_token_ids=[2, 3], seed=7))
    assert cfg.eos_token_ids == (2, 3) and isinstance(cfg.eos_token_ids, tuple)
    assert to_dict(cfg)["eos_token_ids"] == [2, 3]


def test_top_p_of_one_is_allowed():
    assert from_dict(_gen(temperature=1.0, top_p=1.0)).top_p == 1.0


@pytest.mark.parametrize(
    "fields, path, fragment",
    [
        ({"max_new_tokens": 0}, "max_new_tokens", "must be >= 1"),
        ({"temperature": -0.5}, "temperature", "must be >= 0"),
        ({"temperature": 1.0, "top_k": 0}, "top_k", "must be >= 1"),
        ({"temperature": 1.0, "top_p": 0.0}, "top_p", "must be in (0, 1]"),
        ({"temperature": 1.0, "top_p": 1.5}, "top_p", "must be in (0, 1]"),
        ({"repetition_penalty": 0.0}, "repetition_penalty", "must be > 0"),
        ({"top_k": 50}, "temperature", "is 0 (greedy) but top_k/top_p are set"),
        ({"top_p": 0.9}, "temperature", "is 0 (greedy) but top_k/top_p are set"),
        ({"max_new_tokens": "32"}, "max_new_tokens", "valid integer"),
        ({"eos_token_ids": 2}, "eos_token_ids", "valid array"),
        ({"eos_token_ids": ["2"]}, "eos_token_ids.0", "valid integer"),
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
