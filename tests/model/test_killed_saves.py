"""Saves killed with SIGKILL at random points, by real processes: the target is always the complete old
checkpoint or the complete new one, nothing else in its folder is touched, and the next save removes what the
killed one left behind.

A helper process (``save_loop_child.py``) loads checkpoints A and B once, then forks writers that replace the
target with B, A, B, ... until it kills them after a delay. The delays are spread over the measured duration
of one save (with jitter), so the kills land in different phases: staging, hashing, the exchange, deleting
the old checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from model import build, load_checkpoint, save_checkpoint
from model.atomic import clean_stale_temporaries
from specs import apply_overrides, load_preset, verify_manifest

CHILD = Path(__file__).with_name("save_loop_child.py")
SHARD = 4 << 20  # a ~16 MB model in 4-5 shards plus an index: more files, more phases to land in
OVERRIDES = ["d_model=256", "n_layers=4", "vocab_size=2048", "mlp.hidden=704", "attention.n_heads=8"]
TEMPORARY = re.compile(r"\.ckpt\.(tmp|old)-[a-z0-9_]{8}")

# Beside the target: things no save of "ckpt" may touch, some named to look like its temporaries.
UNRELATED = {
    "notes.txt": "mine",
    "other/data.bin": "data",
    "ckpt2/MANIFEST.json": "{}",
    ".ckpt2.tmp-abcdefgh/x": "another target's stale temporary",
    ".ckpt.tmp-short/x": "not the pattern",
    ".ckpt.tmp-abcdefgh.keep/x": "not the pattern",
    ".ckpt.old-ABCDEFGH/x": "not the pattern",
    "ckpt.tmp-abcdefgh/x": "not hidden",
}


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sources")
    torch.manual_seed(0)
    m = build(apply_overrides(load_preset("llama-tiny"), OVERRIDES))
    a = save_checkpoint(m, root / "A", max_shard_bytes=SHARD)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(1.0)
    b = save_checkpoint(m, root / "B", max_shard_bytes=SHARD)
    return {"A": a, "B": b}


@pytest.fixture(scope="module")
def helper(sources: dict[str, Path], tmp_path_factory: pytest.TempPathFactory):
    scratch = tmp_path_factory.mktemp("scratch")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    stderr = (scratch / "stderr.txt").open("w")
    proc = subprocess.Popen(
        [sys.executable, str(CHILD), str(sources["A"]), str(sources["B"]), str(scratch / "ckpt"), str(SHARD)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        env=env,
    )
    ready = proc.stdout.readline().split()
    assert ready and ready[0] == "ready", (scratch / "stderr.txt").read_text()
    duration = float(ready[1])

    def kill_after(target: Path, first: str, delay: float, mode: str) -> None:
        proc.stdin.write(f"{target} {first} {delay:.6f} {mode}\n")
        proc.stdin.flush()
        answer = proc.stdout.readline().strip()
        assert answer == "killed", f"{answer}: {(scratch / 'stderr.txt').read_text()}"

    yield duration, kill_after
    proc.stdin.close()
    proc.wait(timeout=30)
    stderr.close()


def _weights_id(path: Path) -> str:
    """The manifest's hashes of everything but the card (whose created_at differs between saves)."""
    files = json.loads((path / "MANIFEST.json").read_text())["files"]
    return " ".join(f"{f['path']}={f['sha256']}" for f in files if f["path"] != "modelcard.json")


def _temporaries(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if TEMPORARY.fullmatch(p.name))


def _snapshot(parent: Path) -> dict[str, str]:
    return {
        p.relative_to(parent).as_posix(): p.read_text()
        for p in parent.rglob("*")
        if p.is_file() and p.relative_to(parent).parts[0] != "ckpt" and not TEMPORARY.fullmatch(p.relative_to(parent).parts[0])
    }


def _which(target: Path, ids: dict[str, str]) -> str:
    """"A" or "B" when ``target`` is that checkpoint, complete and intact; fails otherwise."""
    assert verify_manifest(target) == [], f"{target} is not a complete checkpoint"
    assert _weights_id(target) in ids, f"{target} is neither A nor B"
    return ids[_weights_id(target)]


@pytest.mark.parametrize(
    ("mode", "fractions"),
    [
        ("exchange", [0.05, 0.2, 0.35, 0.5, 0.65, 0.8, 0.95, 1.4]),
        ("fallback", [0.1, 0.4, 0.7, 0.9, 1.3]),
    ],
)
def test_killed_replacements_leave_the_old_or_the_new_checkpoint(
    mode, fractions, sources, helper, tmp_path, caplog: pytest.LogCaptureFixture
):
    duration, kill_after = helper
    ids = {_weights_id(sources[name]): name for name in "AB"}
    model_a = load_checkpoint(sources["A"], verify=False)
    parent = tmp_path / "runs"
    for rel, text in UNRELATED.items():
        (parent / rel).parent.mkdir(parents=True, exist_ok=True)
        (parent / rel).write_text(text)
    before = _snapshot(parent)
    target = parent / "ckpt"
    left_behind = []
    caplog.set_level(logging.WARNING, logger="model")
    for fraction in fractions:
        caplog.clear()
        save_checkpoint(model_a, target, overwrite=True, max_shard_bytes=SHARD)  # uninterrupted: cleans up
        assert _temporaries(parent) == []
        if left_behind and left_behind[-1]:
            assert "stale temporar" in caplog.text and all(name in caplog.text for name in left_behind[-1])
        assert _which(target, ids) == "A"

        kill_after(target, "B", duration * fraction * random.uniform(0.8, 1.2), mode)
        left_behind.append(_temporaries(parent))
        if mode == "fallback" and not target.exists():  # killed between its two renames: recovered on cleanup
            caplog.clear()
            clean_stale_temporaries(target)
            assert "restored" in caplog.text
            left_behind[-1] = _temporaries(parent)
        _which(target, ids)
        assert _snapshot(parent) == before

    save_checkpoint(model_a, target, overwrite=True, max_shard_bytes=SHARD)
    assert _temporaries(parent) == [] and _which(target, ids) == "A" and _snapshot(parent) == before
    assert any(left_behind), "no kill landed inside a save; the timings exercise nothing"
