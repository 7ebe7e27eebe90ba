"""Sharded checkpoints on one process: conversion to and from the single-file layout, and the environment
checks of a multi-process launch (no process is started here)."""

from __future__ import annotations

import pytest
import torch

import model
import pack
import specs
from train import Trainer, sharded
from train import state as train_state
from train.distributed import DistributedSetupError, launched_world
from train.run_dir import RunDir, checkpoint_problems

STORE = model.STORE
SHORT = ["max_steps=2", "eval_every=2", "eval_batches=1", "precision=float32", "compile=false", "data.batch_size=4"]


def _optimizer_tensors(state: dict) -> list[torch.Tensor]:
    return [t for per_param in state["state"].values() for t in per_param.values() if isinstance(t, torch.Tensor)]


def test_single_file_to_sharded_and_back_keeps_weights_optimizer_and_cursor(tmp_path):
    cfg = specs.apply_overrides(specs.load_config("gpt-shakespeare-char", kind="train"), SHORT)
    Trainer(cfg, tmp_path / "run", STORE, progress=False).fit()
    single = tmp_path / "run" / "checkpoints" / "step-00000002"
    dcp_dir, back = tmp_path / "sharded", tmp_path / "back"
    assert pack.main(["checkpoint", "shard", str(single), "--out", str(dcp_dir)]) == 0  # finds the run's config
    assert sharded.is_sharded(dcp_dir) and checkpoint_problems(dcp_dir, STORE) == []
    assert pack.main(["checkpoint", "consolidate", str(dcp_dir), "--out", str(back)]) == 0
    assert STORE.verify(back) == [] and (back / "tokenizer.json").is_file()
    before, after = STORE.load(single).state_dict(), STORE.load(back).state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # bitwise: a copy, no arithmetic
    saved, restored = train_state.read(single), train_state.read(back)
    assert (restored.step, restored.data, restored.best_val_loss) == (saved.step, saved.data, saved.best_val_loss)
    assert saved.optimizer is not None and restored.optimizer is not None
    assert all(torch.equal(a, b) for a, b in zip(_optimizer_tensors(saved.optimizer), _optimizer_tensors(restored.optimizer)))
    assert restored.optimizer["param_groups"] == saved.optimizer["param_groups"]


def test_a_damaged_shard_or_a_crashed_save_is_never_taken_for_a_checkpoint(tmp_path):
    cfg = specs.apply_overrides(specs.load_config("gpt-shakespeare-char", kind="train"), SHORT)
    Trainer(cfg, tmp_path / "run", STORE, progress=False).fit()
    run = RunDir(tmp_path / "run")
    dcp_dir = sharded.to_sharded(run.step_dir(2), tmp_path / "s", STORE, cfg)
    shard = next((dcp_dir / "dcp").glob("*.distcp"))
    damaged = bytearray(shard.read_bytes())
    damaged[-1] ^= 0xFF
    shard.write_bytes(bytes(damaged))
    assert any(shard.name in problem for problem in checkpoint_problems(dcp_dir, STORE))
    (run.checkpoints / ".step-00000004.partial" / "dcp").mkdir(parents=True)  # what a crash mid-save leaves
    assert run.latest(STORE) == run.step_dir(2)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"RANK": "0"}, "RANK set but WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT not"),
        ({"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "x"}, "MASTER_PORT not"),
        ({"RANK": "2", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "x", "MASTER_PORT": "1"}, r"RANK 2 is not in"),
        ({"RANK": "a", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "x", "MASTER_PORT": "1"}, "whole numbers"),
    ],
)
def test_a_half_configured_environment_is_named(env, message):
    with pytest.raises(DistributedSetupError, match=message):
        launched_world(env)


def test_no_environment_is_one_process_and_a_full_one_is_read():
    assert launched_world({}) is None
    full = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "h", "MASTER_PORT": "29500"}
    assert launched_world(full) == (1, 2, 1)


def test_cpu_offload_is_refused_on_the_cpu():
    from train.distributed import World
    from train.parallelize import parallelize

    cfg = specs.apply_overrides(specs.load_config("gpt-shakespeare-char", kind="train"),
                                ["parallel.strategy=fsdp2", "parallel.cpu_offload=true"])
    with pytest.raises(DistributedSetupError, match="this run is on the CPU already"):
        parallelize(STORE.build(cfg.model), cfg, World(rank=0, world_size=1, local_rank=0, group=False),
                    torch.device("cpu"))


def test_the_command_line_reports_setup_mistakes_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    code = pack.main(["train", "gpt-shakespeare-char", "--out", str(tmp_path / "r"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.count("\n") == 0 and "WORLD_SIZE set but RANK" in err
    for name, value in {"RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}.items():
        monkeypatch.setenv(name, value)
    code = pack.main(["train", "gpt-shakespeare-char", "--out", str(tmp_path / "r"), "--quiet"])
    assert code == 1 and "parallel.strategy is single but 2 processes were started" in capsys.readouterr().err
    code = pack.main(["train", "gpt-shakespeare-char", "--out", str(tmp_path / "r"), "--nproc", "2"])
    assert code == 2 and "leave it out when running under torchrun" in capsys.readouterr().err
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    code = pack.main(["train", "gpt-shakespeare-char", "--out", str(tmp_path / "r"), "--nproc", "2"])
    assert code == 2 and "--nproc 2 needs parallel.strategy ddp or fsdp2" in capsys.readouterr().err
