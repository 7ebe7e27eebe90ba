"""Checksum files that ``sha256sum --strict -c`` accepts, Ed25519 keys and signatures that openssl verifies,
and atomic writes."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

import governance
from governance import files
from governance.checksums import parse_checksums

needs_tools = pytest.mark.skipif(shutil.which("sha256sum") is None or shutil.which("openssl") is None,
                                 reason="needs GNU sha256sum and openssl")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "sub dir").mkdir()
    (tmp_path / "a.bin").write_bytes(bytes(range(256)) * 10)
    (tmp_path / "sub dir" / "b.txt").write_text("hello\n")
    return tmp_path


@needs_tools
def test_checksums_and_signature_pass_sha256sum_and_openssl(tree, tmp_path_factory):
    private, public = governance.keygen(tmp_path_factory.mktemp("k") / "k.pem")
    out = governance.write_checksums(tree, [tree / "a.bin", tree / "sub dir" / "b.txt"], tree / "SUMS")
    assert out.read_text().splitlines()[1].endswith(" *sub dir/b.txt")
    assert subprocess.run(["sha256sum", "--strict", "-c", "SUMS"], cwd=tree, capture_output=True).returncode == 0
    governance.sign_file(out, governance.load_private_key(private), tree / "SUMS.sig", tree / "pub.pem")
    assert (tree / "SUMS.sig").stat().st_size == 64 and (tree / "pub.pem").read_bytes() == public.read_bytes()
    done = subprocess.run(["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", "pub.pem", "-rawin", "-in", "SUMS",
                           "-sigfile", "SUMS.sig"], cwd=tree, capture_output=True, text=True)
    assert done.returncode == 0 and "Signature Verified Successfully" in done.stdout
    assert governance.signature_problems(out, tree / "SUMS.sig", tree / "pub.pem") == []
    (tree / "sub dir" / "b.txt").write_text("hello!\n")
    entries, problems = governance.check_checksums(tree, out)
    assert problems == [f"sub dir/b.txt: checksum mismatch (sha256 {_sha(tree / 'sub dir' / 'b.txt')}, SUMS says "
                        f"{entries['sub dir/b.txt']})"]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_file_outside_the_root_is_refused(tree, tmp_path_factory):
    outside = tmp_path_factory.mktemp("elsewhere") / "x"
    outside.write_text("x")
    with pytest.raises(governance.GovernanceError, match="not inside"):
        governance.write_checksums(tree, [outside], tree / "SUMS")


@pytest.mark.parametrize("line, reason", [
    ("abc *x", "malformed"),
    ("A" * 64 + " *x", "malformed"),  # uppercase hex
    ("a" * 64 + "  x", "malformed"),  # text mode: we always write binary mode
    ("a" * 64 + " *../x", "leaves the release directory"),
    ("a" * 64 + " */etc/passwd", "leaves the release directory"),
])
def test_malformed_lines_are_problems(line, reason):
    entries, problems = parse_checksums(line + "\n", "SUMS")
    assert entries == {} and len(problems) == 1 and reason in problems[0] and "SUMS line 1" in problems[0]


def test_duplicate_lines_and_missing_newline():
    text = "a" * 64 + " *x\n" + "b" * 64 + " *x"
    _, problems = parse_checksums(text, "SUMS")
    assert problems == ["SUMS: last line has no newline (truncated?)", "SUMS line 2: x listed twice"]


def test_keygen_mode_passphrase_and_no_overwrite(tmp_path):
    private, public = governance.keygen(tmp_path / "k.pem", passphrase=b"secret words")
    assert stat.S_IMODE(private.stat().st_mode) == 0o600 and public.name == "k.pub.pem"
    assert b"ENCRYPTED" in private.read_bytes()
    governance.load_private_key(private, b"secret words")
    with pytest.raises(governance.GovernanceError, match="passphrase"):
        governance.load_private_key(private)
    with pytest.raises(governance.GovernanceError, match="wrong passphrase"):
        governance.load_private_key(private, b"wrong")
    with pytest.raises(governance.GovernanceError, match="already exists"):
        governance.keygen(tmp_path / "k.pem")


def test_a_key_of_another_kind_is_refused(tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    path = tmp_path / "ec.pem"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    with pytest.raises(governance.GovernanceError, match="not an Ed25519 key"):
        governance.load_private_key(path)


def test_atomic_write_keeps_the_old_file_when_interrupted(tmp_path, monkeypatch):
    target = tmp_path / "A.json"
    files.write_text(target, "old\n")

    def fail(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(KeyboardInterrupt):
        files.write_text(target, "new\n")
    assert target.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["A.json"]
