"""The Trainer end to end on the bundled corpus: what a run directory holds, exact resume, divergence,
evaluation and checkpoints. Runs are a dozen steps of the 0.8M-parameter shakespeare-char model (~0.5 s)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

import model
import specs
from train import Trainer, TrainingDiverged
from train.run_dir import RunDir

STORE = model.STORE
SHORT = [
    "max_steps=12",
    "eval_every=4",
    "eval_batches=2",
    "schedule.warmup_steps=2",
    "schedule.decay_steps=12",
    "keep_last=10",
    # Float32 eager, for bitwise comparisons and speed; bfloat16 and compile get their own tests.
    "precision=float32",
    "compile=false",
]


def config(*overrides: str) -> specs.TrainConfig:
    return specs.apply_overrides(specs.load_config("gpt-shakespeare-char", kind="train"), [*SHORT, *overrides])


def rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_a_run_leaves_metrics_checkpoints_and_curves(tmp_path):
    run = tmp_path / "run"
    result = Trainer(config(), run, STORE, progress=False).fit()
    assert result.steps == 12 and result.latest == run / "checkpoints" / "step-00000012"
    logged = rows(run)
    assert [r["step"] for r in logged] == list(range(1, 13))
    for key in ("train_loss", "lr", "step_ms", "tokens_per_s", "mfu", "grad_norm"):
        assert all(isinstance(r[key], float) for r in logged), key
    assert [r["step"] for r in logged if "val_loss" in r] == [4, 8, 12]
    assert logged[-1]["train_loss"] < logged[0]["train_loss"] - 0.5  # it learns (4.2 -> ~2.9 in 12 steps)
    assert all(r["val_perplexity"] == pytest.approx(math.exp(r["val_loss"])) for r in logged if "val_loss" in r)
    header = "step,train_loss,val_loss,val_perplexity,lr,step_ms,tokens_per_s,mfu,grad_norm"
    assert (run / "metrics.csv").read_text().splitlines()[0] == header
    assert len((run / "metrics.csv").read_text().splitlines()) == 13
    assert (run / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert any((run / "tensorboard").iterdir())
    assert specs.load_config(run / "train_config.yaml") == config()
    checkpoints = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert checkpoints == ["LATEST", "best", "step-00000004", "step-00000008", "step-00000012"]
    assert (run / "checkpoints" / "LATEST").read_text().strip() == "step-00000012"
    latest = run / "checkpoints" / "step-00000012"
    assert STORE.verify(latest) == [] and (latest / "train_state" / "state.json").is_file()
    assert (latest / "tokenizer.json").is_file()
    card = specs.load_config(latest / "modelcard.json", kind="modelcard")
    assert card.metrics["val_loss"] == pytest.approx(logged[-1]["val_loss"]) and card.training_data[0].uri == "lmplanes:tinyshakespeare"
    best_val = min(r["val_loss"] for r in logged if "val_loss" in r)
    best_card = specs.load_config(run / "checkpoints" / "best" / "modelcard.json", kind="modelcard")
    assert best_card.metrics["val_loss"] == pytest.approx(best_val) == pytest.approx(result.best_val_loss)


def test_keep_last_prunes_old_step_checkpoints(tmp_path):
    Trainer(config("keep_last=2"), tmp_path / "run", STORE, progress=False).fit()
    names = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert names == ["LATEST", "best", "step-00000008", "step-00000012"]


@pytest.mark.parametrize("extra", [(), ("model.dropout=0.1", "model.attention.dropout=0.1")], ids=["plain", "dropout"])
def test_resume_continues_bitwise_like_an_uninterrupted_run(tmp_path, extra):
    """Run 12 steps; then resume a copy of that run from its step-4 checkpoint (as if it had stopped there):
    every later step's loss is bitwise the uninterrupted run's (CPU, float32), dropout draws included."""
    cfg = config(*extra)
    whole = tmp_path / "whole"
    Trainer(cfg, whole, STORE, progress=False).fit()
    cut = tmp_path / "cut"
    shutil.copytree(whole, cut)
    for later in ("step-00000008", "step-00000012"):
        shutil.rmtree(cut / "checkpoints" / later)
    (cut / "checkpoints" / "LATEST").write_text("step-00000004\n")
    result = Trainer.resume(cut, STORE, progress=False)
    assert result.steps == 12
    assert [r["step"] for r in rows(cut)] == list(range(1, 13))  # rows after step 4 were rewritten, once each
    for a, b in zip(rows(whole), rows(cut)):
        assert a["train_loss"] == b["train_loss"] and a.get("val_loss") == b.get("val_loss"), a["step"]


def test_resume_with_more_steps_and_a_damaged_latest_checkpoint(tmp_path):
    run = tmp_path / "run"
    Trainer(config(), run, STORE, progress=False).fit()
    weights = run / "checkpoints" / "step-00000012" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    cfg = specs.apply_overrides(RunDir(run).config(), ["max_steps=14"])
    result = Trainer.resume(run, STORE, overrides=cfg, progress=False)  # falls back to step 8, the newest intact
    assert result.steps == 14
    assert [r["step"] for r in rows(run)] == list(range(1, 15))
    assert RunDir(run).config().max_steps == 14


def test_divergence_stops_with_the_last_good_checkpoint_named(tmp_path, monkeypatch):
    import train.trainer as trainer_module

    real_step = trainer_module.Trainer._step
    calls = {"n": 0}

    def exploding(self, *args):
        calls["n"] += 1
        loss, norm = real_step(self, *args)
        return (math.nan if calls["n"] == 6 else loss), norm

    monkeypatch.setattr(trainer_module.Trainer, "_step", exploding)
    run = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match=r"the training loss is nan at step 6; the last good checkpoint is .*step-00000004"):
        Trainer(config(), run, STORE, progress=False).fit()
    assert STORE.verify(run / "checkpoints" / "step-00000004") == []
    assert (run / "checkpoints" / "LATEST").read_text().strip() == "step-00000004"
    assert rows(run)[-1]["step"] == 6 and math.isnan(rows(run)[-1]["train_loss"])


def test_gradient_accumulation_averages_micro_batches(tmp_path):
    """Two micro-batches of 6 give the update one batch of their 12 rows gives (equal token counts, so the
    mean of the two means is the mean over all tokens); float32, summation order only."""
    import data
    from train.optim import build_optimizer

    cfg = config("grad_accum_steps=2", "data.batch_size=6", "grad_clip=null")
    shards = data.TokenShards(data.shakespeare_char(), "train")
    stream = data.RandomWindows(shards, seq_len=64, batch_size=6, seed=3)
    first, second = stream.batch(0), stream.batch(1)
    both = specs.Batch(input_ids=torch.cat([first.input_ids, second.input_ids]),
                       labels=torch.cat([first.labels, second.labels]))
    results = []
    for accum, batches in ((2, [first, second]), (1, [both])):
        torch.manual_seed(0)
        net = STORE.build(cfg.model)
        trainer = Trainer(specs.apply_overrides(cfg, [f"grad_accum_steps={accum}"]), tmp_path / str(accum), STORE)
        optimizer = build_optimizer(net, cfg.optimizer)
        loss, _ = trainer._step(net, optimizer, iter(batches))
        results.append((loss, torch.cat([p.detach().flatten() for p in net.parameters()])))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-6)
    torch.testing.assert_close(results[0][1], results[1][1], atol=1e-6, rtol=1e-6)


def test_bfloat16_autocast_and_activation_checkpointing_train(tmp_path):
    result = Trainer(config("precision=bfloat16", "activation_checkpointing=true", "max_steps=4", "eval_every=4",
                            "schedule.decay_steps=4"), tmp_path / "run", STORE, progress=False).fit()
    assert math.isfinite(result.final_train_loss) and result.final_train_loss < 4.0


def test_a_run_directory_is_never_reused_or_overwritten(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="a run needs a new or empty directory"):
        Trainer(config(), run, STORE, progress=False).fit()
    assert (run / "notes.txt").read_text() == "mine"


def test_a_corpus_larger_than_the_vocabulary_is_refused(tmp_path):
    with pytest.raises(ValueError, match="the corpus tokenizer has 65 tokens but model.vocab_size is 50"):
        Trainer(config("model.vocab_size=50"), tmp_path / "run", STORE, progress=False).fit()


@pytest.mark.slow
def test_the_preset_settings_compile_and_train_in_bfloat16(tmp_path):
    """The preset's own CPU settings (bfloat16 autocast, torch.compile after an eager warm-up): a short run
    learns, and its losses stay within bfloat16 noise of a float32 eager run of the same steps."""
    fast = Trainer(config("precision=bfloat16", "compile=true"), tmp_path / "fast", STORE, progress=False).fit()
    Trainer(config(), tmp_path / "plain", STORE, progress=False).fit()
    assert fast.final_train_loss < rows(tmp_path / "fast")[0]["train_loss"] - 0.5
    for a, b in zip(rows(tmp_path / "fast"), rows(tmp_path / "plain")):
        assert abs(a["train_loss"] - b["train_loss"]) < 0.05, a["step"]


def test_a_failed_save_leaves_the_previous_checkpoint_latest(tmp_path, monkeypatch):
    """A crash while writing the step-8 checkpoint: step 4 stays intact, named by LATEST, and a resume
    continues from it."""
    run = tmp_path / "run"
    real_save = STORE.save

    class Boom(RuntimeError):
        pass

    def failing_save(model_, path, **kw):
        if Path(path).name == "step-00000008":
            raise Boom("disk gone")
        return real_save(model_, path, **kw)

    monkeypatch.setattr(STORE, "save", failing_save)
    with pytest.raises(Boom):
        Trainer(config(), run, STORE, progress=False).fit()
    assert (run / "checkpoints" / "LATEST").read_text().strip() == "step-00000004"
    assert not (run / "checkpoints" / "step-00000008").exists()
    monkeypatch.setattr(STORE, "save", real_save)
    assert Trainer.resume(run, STORE, progress=False).steps == 12
