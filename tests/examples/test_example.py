"""The README's first command ends in ``python examples/example.py``: it must keep working end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import model

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "example.py"


def test_example_runs_and_leaves_a_verified_checkpoint(tmp_path):
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), "--out", str(tmp_path)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "identical logits" in done.stdout
    assert "greedy continuation with the KV cache (noise: the weights are random): ROMEO:" in done.stdout
    ckpt = tmp_path / "gpt-shakespeare-char"
    assert model.verify_checkpoint(ckpt) == []
    assert "randomly initialised (untrained)" in done.stdout
    assert f"lmplanes checkpoint show {ckpt}" in done.stdout
    assert sorted(p.name for p in ckpt.iterdir()) == [
        "MANIFEST.json", "config.json", "model.safetensors", "modelcard.json"
    ]
