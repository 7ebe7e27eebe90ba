"""``python -m governance ...``: the commands end to end, one-line errors for user mistakes, and a plane that
never loads torch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from governance.cli import main
from governance.signing import keygen

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "governance", *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}, timeout=300)


def test_release_and_verify_from_the_command_line_without_torch(checkpoint, tmp_path):
    """The whole release runs in a subprocess that refuses to import torch: governance works on files."""
    release = tmp_path / "ckpt"
    shutil.copytree(checkpoint, release)
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "torch.py").write_text("raise ImportError('governance must not import torch')\n")
    env = {"PYTHONPATH": f"{blocker}{os.pathsep}{ROOT}", "SECRET": "pass phrase"}
    keygen(tmp_path / "k.pem", b"pass phrase")
    done = _run("release", str(release), "--key", str(tmp_path / "k.pem"), "--passphrase-env", "SECRET",
                "--seed", "1337", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == f"{release}: release verified (signed)"
    receipt = json.loads((release / "artifacts" / "RECEIPT.json").read_text())
    assert receipt["inputs"]["seeds"] == [1337] and receipt["command"][1:3] == ["release", str(release)]
    done = _run("verify", str(release), "--key", str(tmp_path / "k.pub.pem"), env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    (release / "config.json").write_text("{}\n")
    done = _run("verify", str(release), env=env)
    assert done.returncode == 1 and "config.json: checksum mismatch" in done.stdout
    assert done.stderr.strip().endswith("release gate FAILED (4 problems)"), done.stdout


def test_single_commands(checkpoint, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    assert main(["sbom", "--checkpoint", str(checkpoint), "--out", str(out / "S.cdx.json")]) == 0
    assert main(["sbom", "--checkpoint", str(checkpoint), "--out", str(out / "S.spdx.json"), "--format", "spdx"]) == 0
    assert json.loads((out / "S.spdx.json").read_text())["spdxVersion"] == "SPDX-2.3"
    assert main(["keygen", "--out", str(tmp_path / "k.pem")]) == 0
    assert main(["sign", "--root", str(checkpoint), "--files", str(checkpoint / "config.json"),
                 str(checkpoint / "modelcard.json"), "--out", str(out / "CHECKSUMS.sha256"),
                 "--key", str(tmp_path / "k.pem")]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["CHECKSUMS.sha256", "CHECKSUMS.sha256.sig", "S.cdx.json",
                                                     "S.spdx.json", "ed25519.pub.pem"]
    assert (out / "CHECKSUMS.sha256").read_text().splitlines()[0].endswith(" *config.json")
    assert main(["receipt", "--out", str(out / "R.json"), "--checkpoint", str(checkpoint), "--seed", "3"]) == 0
    assert main(["lineage", "--checkpoint", str(checkpoint), "--out", str(out / "L.dot")]) == 0
    assert main(["card", "--checkpoint", str(checkpoint), "--out-dir", str(out), "--receipt", str(out / "R.json")]) == 0
    assert (out / "MODEL_CARD.md").is_file() and (out / "MODEL_CARD.json").is_file()


@pytest.mark.parametrize("args, message", [
    (["sbom", "--checkpoint", "/no/such/dir", "--out", "x.json"], "error: /no/such/dir: not a directory"),
    (["release", "{tmp}"], "modelcard.json: missing"),
    (["release", "{ckpt}", "--key", "{tmp}/none.pem"], "none.pem: cannot read the signing key"),
    (["release", "{ckpt}", "--key", "{tmp}/k.pem", "--passphrase-env", "NOT_SET_ANYWHERE"], "is not set"),
    (["keygen", "--out", "{tmp}/k.pem"], "already exists; refusing to replace a key"),
    (["verify", "{ckpt}", "--key", "{tmp}/nope.pem"], "{tmp}/nope.pem: no such public key file"),
    (["sign", "--files", "{tmp}/missing", "--out", "{tmp}/S"], "missing: no such file to checksum"),
    (["sbom", "--checkpoint", "{ckpt}", "--out", "{tmp}/no/dir/S.json"], "folder {tmp}/no/dir does not exist"),
    (["card", "--checkpoint", "{ckpt}", "--out-dir", "{tmp}", "--metrics", "{tmp}/k.pem"], "not a readable metrics"),
])
def test_user_mistakes_are_one_line_and_exit_1(checkpoint, tmp_path, capsys, args, message):
    assert main(["keygen", "--out", str(tmp_path / "k.pem")]) == 0
    capsys.readouterr()
    args = [a.format(tmp=tmp_path, ckpt=checkpoint) for a in args]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and message.format(tmp=tmp_path) in err, err


def test_a_malformed_data_manifest_is_one_line(checkpoint, tmp_path, capsys):
    (tmp_path / "manifest.json").write_text('{"format": "lmplanes-token-shards", "splits": {"train": {}}}')
    assert main(["lineage", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "L.dot"), "--data",
                 str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "malformed token-shard build manifest" in err


def test_a_broken_model_card_is_one_line(tmp_path, capsys):
    (tmp_path / "modelcard.json").write_text('{"kind": "modelcard", "version": 1, "nme": 3}')
    assert main(["release", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "name: required field is missing" in err and "did you mean 'name'" in err
    assert not (tmp_path / "artifacts").exists()  # nothing written for an unusable directory
