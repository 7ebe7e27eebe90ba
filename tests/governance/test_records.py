"""The receipt, the lineage graph (rendered by graphviz ``dot``) and the release model card."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import governance
import specs
from governance.card import card_mismatch
from governance.checkpoint import checkpoint_id, read_card
from governance.lineage import lineage_problems
from governance.receipt import CODE_ROOT, gpus, make_receipt, now
from tests.governance.conftest import DATA_SHA

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz 'dot' is not installed")


def test_receipt_records_system_packages_git_and_inputs(checkpoint, tmp_path):
    config = tmp_path / "train.yaml"
    config.write_text("seed: 7\n")
    receipt = make_receipt(command=["train", "x"], started_at=now(), ended_at=now(), seeds=[7, 8], config=config,
                           data_manifests=[config], checkpoint=checkpoint)
    assert receipt["python"]["version"] == platform.python_version()
    assert {"name": "cryptography", "version": __import__("cryptography").__version__} in receipt["packages"]
    assert receipt["inputs"]["seeds"] == [7, 8]
    digest = hashlib.sha256(b"seed: 7\n").hexdigest()
    assert receipt["inputs"]["config_sha256"] == digest
    assert {"path": str(config), "sha256": digest} in receipt["inputs"]["data"]
    assert {"name": "tinyshakespeare", "uri": "lmplanes:tinyshakespeare", "sha256": DATA_SHA} in receipt["inputs"]["data"]
    assert receipt["checkpoint"]["content_id"] == checkpoint_id(checkpoint)
    head = subprocess.run(["git", "-C", str(CODE_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    assert receipt["git"]["revision"] == (head.stdout.strip() if head.returncode == 0 else None)
    assert receipt["system"]["cpu"]["logical_cores"] >= 1
    if shutil.which("nvidia-smi") is None:
        assert receipt["system"]["gpus"] == []


def test_receipt_around_a_command_records_its_exit_status(tmp_path):
    out = tmp_path / "RECEIPT.json"
    code = governance.run_with_receipt([sys.executable, "-c", "raise SystemExit(3)"], out, seeds=[1])
    receipt = json.loads(out.read_text())
    assert code == 3 and receipt["exit_code"] == 3 and receipt["command"][1:] == ["-c", "raise SystemExit(3)"]
    assert receipt["started_at"] <= receipt["ended_at"]


def _data_build(root: Path) -> Path:
    """A minimal token-shard build manifest (the fields the data plane writes that lineage reads)."""
    root.mkdir()
    shards = {"train": {"shards": [{"path": "train-00000.bin", "sha256": "11" * 32}]},
              "val": {"shards": [{"path": "val-00000.bin", "sha256": "22" * 32}]}}
    (root / "manifest.json").write_text(json.dumps({"format": "lmplanes-token-shards", "splits": shards}))
    return root


@needs_dot
def test_lineage_renders_with_dot_and_names_data_run_checkpoint_exports(checkpoint, tmp_path):
    export = tmp_path / "export"
    shutil.copytree(checkpoint, export)
    out = governance.write_lineage(checkpoint, tmp_path / "LINEAGE.dot", png=True, exports=[export],
                                   data_dirs=[_data_build(tmp_path / "shards")])
    text = out.read_text()
    cid = checkpoint_id(checkpoint)
    for node in (f"checkpoint:{cid}", f"data:{DATA_SHA}", "shard:" + "11" * 32, "checkpoint:sha256:" + "cd" * 32):
        assert f'"{node}"' in text
    assert f'"checkpoint:{cid}" -> "export:{checkpoint_id(export)}"' in text
    done = subprocess.run(["dot", "-Tsvg", str(out)], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.count('class="node"') == 8  # checkpoint, run, 2 data sets, 2 shards, parent, export
    assert (tmp_path / "LINEAGE.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert lineage_problems(out, checkpoint, read_card(checkpoint)) == []


def test_an_empty_graph_is_not_a_lineage(checkpoint, tmp_path):
    path = tmp_path / "LINEAGE.dot"
    path.write_text("digraph lineage {}\n")  # dot renders it; it says nothing
    problems = lineage_problems(path, checkpoint, read_card(checkpoint))
    assert len(problems) == 2 and all("no node" in p for p in problems)


def test_release_card_from_modelcard_metrics_sbom_and_receipt(released_once, tmp_path):
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"hellaswag": 0.25, "val_loss": 2.25}))
    art = released_once / "artifacts"
    card_json, card_md = governance.write_card(released_once, tmp_path, metrics=metrics, sbom=art / "SBOM.cdx.json",
                                               receipt=art / "RECEIPT.json")
    document = json.loads(card_json.read_text())
    assert document["metrics"] == {"val_loss": 2.25, "step": 30.0, "hellaswag": 0.25}  # the given file wins
    assert document["sbom"]["format"] == "CycloneDX 1.6" and document["receipt"]["python"] == platform.python_version()
    text = card_md.read_text()
    card = read_card(released_once)
    assert text.startswith("# llama-tiny 0.1.0") and f"{card.parameters:,} parameters" in text
    assert "| hellaswag | 0.25 |" in text and DATA_SHA in text and "## Receipt" in text
    assert card_mismatch(card_json, released_once, card) == []


def test_card_of_another_checkpoint_is_a_mismatch(released_once, checkpoint, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(checkpoint, other)
    (other / "notes.txt").write_text("x")  # a different manifest: a different content id
    specs.write_manifest(other)
    problems = card_mismatch(released_once / "artifacts" / "MODEL_CARD.json", other, read_card(other))
    assert len(problems) == 1 and "content id" in problems[0]


def test_gpus_come_from_nvidia_smi_when_it_is_on_the_path(tmp_path, monkeypatch):
    """No torch, no CUDA: the probe is nvidia-smi's CSV (a stand-in script here, with its real output format)."""
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho 'NVIDIA H200, 570.86.15, 143771 MiB'\necho 'NVIDIA H200, 570.86.15, 143771 MiB'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert gpus() == [{"name": "NVIDIA H200", "driver_version": "570.86.15", "memory.total": "143771 MiB"}] * 2
    fake.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed' >&2\nexit 9\n")
    assert gpus() == []
