"""``lmplanes train`` as users run it: a real process, stopped by a signal, resumed, and its mistakes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pack.cli import main

SHORT = ["--set", "max_steps=6", "--set", "eval_every=3", "--set", "eval_batches=2", "--set", "schedule.warmup_steps=1",
         "--set", "schedule.decay_steps=6", "--set", "compile=false"]


def _lmplanes(*args: str) -> list[str]:
    return [sys.executable, "-m", "pack", *args]


def test_train_then_resume_with_more_steps(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "gpt-shakespeare-char", "--out", str(run), "--quiet", *SHORT]) == 0
    assert "finished step 6: train loss" in capsys.readouterr().out
    assert main(["train", "--resume", str(run), "--quiet", "--set", "train.max_steps=8"]) == 0
    assert "finished step 8" in capsys.readouterr().out
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 9))
    # A checkpoint carries its tokenizer, so it serves as it is.
    assert main(["generate", "--checkpoint", str(run / "checkpoints" / "best"), "--prompt", "ROMEO:",
                 "--max-new-tokens", "5", "--device", "cpu"]) == 0
    out, err = capsys.readouterr()
    assert len(out) == 5 + 1 and err.startswith("5 tokens in "), (out, err)  # 5 characters, then a newline


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "gpt-shakespeare-char"], "give a CONFIG and --out DIR (or --resume DIR)"),
        (["train", "gpt-shakespeare-char", "--resume", "x", "--out", "y"], "--resume DIR continues a run"),
        (["train", "no-such-preset", "--out", "y"], "unknown train preset 'no-such-preset'"),
        (["train", "gpt-shakespeare-char", "--out", "y", "--set", "max_steps=0"], "max_steps: must be >= 1, got 0"),
        (["train", "--resume", "{tmp}/nothing"], "is not a training run directory"),
    ],
)
def test_mistakes_are_one_line(argv, message, tmp_path, capsys):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(argv) in (1, 2)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lmplanes: error: ") and message in err[0], err


def _wait_for_rows(path: Path, rows: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.is_file() and len(path.read_text().splitlines()) >= rows:
            return
        if proc.poll() is not None:
            raise AssertionError(f"the run ended early: {proc.communicate()}")
        time.sleep(0.05)
    raise AssertionError("the run did not get going")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_checkpoints_and_stops_cleanly_and_the_run_resumes(tmp_path, sig):
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        _lmplanes("train", "gpt-shakespeare-char", "--out", str(run), "--quiet", "--set", "max_steps=2000",
                  "--set", "eval_batches=2", "--set", "compile=false"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    _wait_for_rows(run / "metrics.jsonl", 10, proc)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    stopped = int(out.split(f"stopped by {sig.name} after step ")[1].split(":")[0])
    latest = (run / "checkpoints" / "LATEST").read_text().strip()
    assert latest == f"step-{stopped:08d}"
    done = subprocess.run(_lmplanes("train", "--resume", str(run), "--quiet", "--set", f"max_steps={stopped + 3}"),
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"finished step {stopped + 3}" in done.stdout


def test_python_m_train_finds_the_installed_model_store(tmp_path):
    done = subprocess.run([sys.executable, "-m", "train", "gpt-shakespeare-char", "--out", str(tmp_path / "r"), "--quiet",
                           *SHORT], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "finished step 6" in done.stdout
