"""TrainConfig: the nanoGPT recipe preset, nested model configs (by name, by file, migrated), validation."""

from __future__ import annotations

import pytest
import yaml

import specs
from specs import ConfigError, TrainConfig, from_dict, load_config, to_dict


def test_the_nanogpt_cpu_recipe_preset():
    cfg = load_config("gpt-shakespeare-char", kind="train")
    assert isinstance(cfg, TrainConfig)
    assert cfg.model == load_config("gpt-shakespeare-char")  # the model preset of the same name, resolved
    assert (cfg.data.seq_len, cfg.data.batch_size, cfg.data.corpus) == (64, 12, "tinyshakespeare")
    assert (cfg.optimizer.lr, cfg.optimizer.betas, cfg.optimizer.weight_decay) == (1e-3, (0.9, 0.99), 0.1)
    assert (cfg.schedule.kind, cfg.schedule.warmup_steps, cfg.schedule.decay_steps, cfg.schedule.min_lr) == (
        "cosine", 100, 2000, 1e-4
    )
    assert (cfg.max_steps, cfg.grad_clip, cfg.eval_every, cfg.eval_batches) == (2000, 1.0, 250, 20)
    assert cfg.model.dropout == 0.0


def test_a_bare_name_is_the_model_preset_and_kinds_are_separate():
    assert isinstance(load_config("gpt-shakespeare-char"), specs.ModelConfig)
    assert specs.preset_names("train") == ["gpt-shakespeare-char"]
    assert {"model", "train"} <= set(specs.preset_kinds())


def test_round_trip_keeps_the_nested_model_kind_and_version():
    cfg = load_config("gpt-shakespeare-char", kind="train")
    data = to_dict(cfg)
    assert (data["kind"], data["model"]["kind"], data["model"]["version"]) == ("train", "model", 4)
    assert from_dict(data) == cfg
    assert from_dict(yaml.safe_load(specs.dumps_config(cfg))) == cfg


def test_a_nested_model_of_an_older_version_is_migrated(tmp_path):
    data = to_dict(load_config("gpt-shakespeare-char", kind="train"))
    model = data["model"]
    v1 = {k: v for k, v in model.items() if k not in ("attention", "mlp", "rope")}
    v1.update(version=1, n_heads=model["attention"]["n_heads"], mlp=model["mlp"]["kind"], mlp_hidden=512)
    data["model"] = v1
    assert from_dict(data).model == load_config("gpt-shakespeare-char")


def test_model_named_by_a_file_relative_to_the_train_file(tmp_path):
    specs.dump_config(specs.apply_overrides(load_config("llama-tiny"), ["n_layers=3"]), tmp_path / "m.yaml")
    (tmp_path / "run.yaml").write_text(
        "kind: train\nversion: 1\nmodel: m.yaml\ndata: {seq_len: 32, batch_size: 4}\nmax_steps: 10\n"
    )
    cfg = load_config(tmp_path / "run.yaml")
    assert cfg.model.n_layers == 3 and cfg.schedule.kind == "cosine"


def test_problems_inside_the_nested_model_name_their_path(tmp_path):
    (tmp_path / "run.yaml").write_text(
        "kind: train\nversion: 1\nmodel: llama-tiny\ndata: {seq_len: 32, batch_size: 4}\nmax_steps: 10\n"
        "optimizer: {lr: -1}\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "run.yaml")
    assert info.value.problems == [("optimizer.lr", "must be > 0, got -1.0")]
    (tmp_path / "bad.yaml").write_text(
        "kind: train\nversion: 1\nmodel: nope-preset\ndata: {seq_len: 32, batch_size: 4}\nmax_steps: 10\n"
    )
    with pytest.raises(ConfigError, match="model: unknown model preset 'nope-preset'"):
        load_config(tmp_path / "bad.yaml")
    cfg = load_config("gpt-shakespeare-char", kind="train")
    with pytest.raises(ConfigError, match="model.attention.n_head: unknown key; did you mean 'n_heads'"):
        specs.apply_overrides(cfg, ["model.attention.n_head=2"])


@pytest.mark.parametrize(
    ("override", "path", "fragment"),
    [
        ("data.seq_len=65", "data.seq_len", "exceeds model.max_seq_len (64)"),
        ("schedule.warmup_steps=2000", "schedule.decay_steps", "(2000) must exceed warmup_steps (2000)"),
        ("grad_clip=0", "grad_clip", "must be > 0"),
        ("keep_last=0", "keep_last", "must be >= 1"),
        ("optimizer.betas=[0.9, 1.0]", "optimizer.betas", "must be two numbers in [0, 1)"),
        ("device=tpu", "device", "must be auto, cpu, cuda"),
        ("schedule.decay_steps=50", "schedule.decay_steps", "must exceed warmup_steps (100)"),
        ("precision=float16", "precision", "float16"),
        ("model.dtype=bfloat16", "model.dtype", "training keeps float32 parameters and optimizer states"),
        ("parallel.cpu_offload=true", "parallel.cpu_offload", "needs strategy fsdp2 (the strategy is single)"),
        ("parallel.strategy=fsdp3", "parallel.strategy", "fsdp2"),
    ],
)
def test_impossible_runs_are_refused(override, path, fragment):
    with pytest.raises(ConfigError) as info:
        specs.apply_overrides(load_config("gpt-shakespeare-char", kind="train"), [override])
    ((got_path, reason),) = info.value.problems
    assert got_path == path and fragment in reason
