"""A real checkpoint (written by ``model.save_checkpoint``, three weight shards), a key pair, and one release
of it made once per session; tests that tamper with a release get their own copy."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

import governance
import model
from specs import DataRef, load_preset

DATA_SHA = "ab" * 32


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    lm = model.build(load_preset("llama-tiny"))
    total = sum(p.numel() * p.element_size() for p in lm.parameters())
    fields = {"metrics": {"val_loss": 2.5, "step": 30.0}, "license": "Apache-2.0", "code_revision": "abc123",
              "training_data": (DataRef(name="tinyshakespeare", uri="lmplanes:tinyshakespeare", sha256=DATA_SHA),),
              "parents": ("sha256:" + "cd" * 32,)}
    return model.save_checkpoint(lm, tmp_path_factory.mktemp("ckpt") / "ckpt", max_shard_bytes=total // 2,
                                 card_fields=fields)


@pytest.fixture(scope="session")
def key_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return governance.keygen(tmp_path_factory.mktemp("keys") / "release.pem")


@pytest.fixture(scope="session")
def released_once(checkpoint: Path, key_pair: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("release") / "ckpt"
    shutil.copytree(checkpoint, root)
    problems = governance.release(root, key=key_pair[0])
    assert problems == []
    return root


@pytest.fixture
def released(released_once: Path, tmp_path: Path) -> Path:
    """A fresh copy of the signed release, for a test to tamper with."""
    root = tmp_path / "ckpt"
    shutil.copytree(released_once, root)
    return root
