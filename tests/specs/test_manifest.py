"""MANIFEST.json: writing, verifying, and every kind of damage it must name."""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from specs.manifest import (
    MANIFEST_NAME,
    CheckpointError,
    content_id,
    hash_file,
    read_manifest,
    verify_manifest,
    write_manifest,
)


def _tree(root: Path) -> Path:
    root.mkdir()
    (root / "config.json").write_text('{"a": 1}\n')
    (root / "model.safetensors").write_bytes(bytes(range(256)) * 40)
    (root / "train_state").mkdir()
    (root / "train_state" / "optimizer.safetensors").write_bytes(b"\x01\x02\x03" * 100)
    (root / "empty.txt").write_bytes(b"")
    return root


def _manifest(root: Path) -> dict:
    return json.loads((root / MANIFEST_NAME).read_text())


def test_write_lists_every_file_sorted_with_size_and_sha(tmp_path):
    root = _tree(tmp_path / "ckpt")
    written = write_manifest(root)
    on_disk = _manifest(root)
    assert written == on_disk
    assert on_disk["format"] == "lmplanes-manifest" and on_disk["version"] == 1
    paths = [f["path"] for f in on_disk["files"]]
    assert paths == sorted(["config.json", "model.safetensors", "train_state/optimizer.safetensors", "empty.txt"])
    for entry in on_disk["files"]:
        data = (root / entry["path"]).read_bytes()
        assert entry["size"] == len(data)
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
    canonical = json.dumps(on_disk["files"], sort_keys=True, separators=(",", ":"))
    assert on_disk["content_id"] == "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()
    assert verify_manifest(root) == []
    assert sorted(p.name for p in root.iterdir()) == sorted(
        ["config.json", "model.safetensors", "train_state", "empty.txt", MANIFEST_NAME]
    )  # no temp files left


def test_content_id_is_independent_of_location_and_stable(tmp_path):
    root = _tree(tmp_path / "a")
    first = write_manifest(root)["content_id"]
    assert write_manifest(root)["content_id"] == first  # rewriting does not list the manifest itself
    shutil.copytree(root, tmp_path / "b")
    assert write_manifest(tmp_path / "b")["content_id"] == first
    assert content_id(_manifest(root)["files"]) == first


def test_hash_file_chunks_large_files(tmp_path):
    data = bytes(range(251)) * 10_000  # ~2.4 MiB: several 1 MiB chunks and a partial one
    (tmp_path / "big").write_bytes(data)
    assert hash_file(tmp_path / "big") == (len(data), hashlib.sha256(data).hexdigest())


def test_known_hashes_are_used_only_when_the_size_matches(tmp_path):
    root = _tree(tmp_path / "ckpt")
    stale = {"config.json": (1, "0" * 64)}  # wrong size: must be re-hashed
    write_manifest(root, known=stale)
    assert verify_manifest(root) == []


def test_missing_manifest(tmp_path):
    root = _tree(tmp_path / "ckpt")
    problems = verify_manifest(root)
    assert len(problems) == 1 and problems[0].startswith(MANIFEST_NAME) and "missing" in problems[0]
    with pytest.raises(CheckpointError, match="MANIFEST.json: missing"):
        read_manifest(root)


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"format": "lmplanes-manifest", "version": 1, "content_id": "x"}', "'files' missing"),
        ('{"format": "other", "version": 1, "content_id": "x", "files": []}', "format is 'other'"),
        ('{"format": "lmplanes-manifest", "version": 9, "content_id": "x", "files": []}', "unsupported version 9"),
    ],
)
def test_malformed_manifest(tmp_path, text, fragment):
    root = _tree(tmp_path / "ckpt")
    (root / MANIFEST_NAME).write_text(text)
    problems = verify_manifest(root)
    assert problems and all(p.startswith(MANIFEST_NAME) for p in problems)
    assert any(fragment in p for p in problems), problems


@pytest.mark.parametrize(
    "entry, fragment",
    [
        ({"path": "../outside", "size": 1, "sha256": "0" * 64}, "not a relative path inside"),
        ({"path": "/etc/passwd", "size": 1, "sha256": "0" * 64}, "not a relative path inside"),
        ({"path": "x", "size": -1, "sha256": "0" * 64}, "not a non-negative integer"),
        ({"path": "x", "size": 1, "sha256": "ABC"}, "not a lowercase hex digest"),
        ({"path": "x", "size": 1}, "exactly path, size and sha256"),
        ({"path": "config.json", "size": 9, "sha256": "0" * 64}, "listed twice"),
    ],
)
def test_malformed_entries(tmp_path, entry, fragment):
    root = _tree(tmp_path / "ckpt")
    manifest = write_manifest(root)
    manifest["files"].append(entry)
    (root / MANIFEST_NAME).write_text(json.dumps(manifest))
    problems = verify_manifest(root)
    assert any(fragment in p for p in problems), problems


def test_listed_file_missing(tmp_path):
    root = _tree(tmp_path / "ckpt")
    write_manifest(root)
    (root / "train_state" / "optimizer.safetensors").unlink()
    assert verify_manifest(root) == [f"train_state/optimizer.safetensors: listed in {MANIFEST_NAME} but missing"]


def test_size_mismatch_is_truncated_or_extended(tmp_path):
    root = _tree(tmp_path / "ckpt")
    write_manifest(root)
    with open(root / "model.safetensors", "ab") as fh:
        fh.write(b"\0")
    (problem,) = verify_manifest(root)
    assert problem.startswith("model.safetensors:") and "truncated or extended" in problem


def test_sha_mismatch_same_size(tmp_path):
    root = _tree(tmp_path / "ckpt")
    write_manifest(root)
    (root / "config.json").write_text('{"a": 2}\n')
    (problem,) = verify_manifest(root)
    assert problem.startswith("config.json:") and "sha256" in problem


def test_edited_manifest_caught_by_content_id(tmp_path):
    root = _tree(tmp_path / "ckpt")
    manifest = write_manifest(root)
    # an attacker replaces a file and updates its hash, but cannot update the content id consistently by accident
    (root / "empty.txt").write_bytes(b"evil")
    entry = next(f for f in manifest["files"] if f["path"] == "empty.txt")
    entry.update(size=4, sha256=hashlib.sha256(b"evil").hexdigest())
    (root / MANIFEST_NAME).write_text(json.dumps(manifest))
    (problem,) = verify_manifest(root)
    assert problem.startswith(MANIFEST_NAME) and "content_id" in problem and "edited" in problem


def test_unlisted_files_are_reported(tmp_path):
    root = _tree(tmp_path / "ckpt")
    write_manifest(root)
    (root / "extra.bin").write_bytes(b"x")
    (root / "train_state" / ".hidden").write_bytes(b"y")
    assert verify_manifest(root) == [
        f"extra.bin: present but not listed in {MANIFEST_NAME}",
        f"train_state/.hidden: present but not listed in {MANIFEST_NAME}",
    ]


def test_not_a_directory(tmp_path):
    (tmp_path / "file").write_text("x")
    (problem,) = verify_manifest(tmp_path / "file")
    assert "not a directory" in problem
    with pytest.raises(NotADirectoryError):
        write_manifest(tmp_path / "file")


def test_checkpoint_error_lists_one_problem_per_line():
    err = CheckpointError(["a.bin: missing", "b.bin: sha256 mismatch"], "ckpt")
    assert isinstance(err, ValueError)
    assert err.problems == ["a.bin: missing", "b.bin: sha256 mismatch"]
    assert str(err).splitlines()[1:] == ["  a.bin: missing", "  b.bin: sha256 mismatch"]
    assert str(CheckpointError("x: gone")) == "invalid checkpoint: x: gone"


_NAMES = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_.-", min_size=1, max_size=8).filter(
    lambda s: s not in (".", "..", MANIFEST_NAME)
)


@settings(max_examples=25, deadline=None)
@given(
    files=st.dictionaries(_NAMES, st.binary(min_size=1, max_size=64), min_size=1, max_size=6),
    victim=st.integers(min_value=0),
    offset=st.integers(min_value=0),
)
def test_any_flipped_byte_is_named(files, victim, offset):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name, data in files.items():
            (root / name).write_bytes(data)
        write_manifest(root)
        assert verify_manifest(root) == []
        name = sorted(files)[victim % len(files)]
        data = bytearray(files[name])
        data[offset % len(data)] ^= 0xFF
        (root / name).write_bytes(bytes(data))
        (problem,) = verify_manifest(root)
        assert problem.startswith(f"{name}: sha256")


def test_the_release_folder_is_not_part_of_the_checkpoint(tmp_path):
    """``artifacts/`` at the top holds governance's release of the checkpoint, written after the manifest."""
    root = _tree(tmp_path / "ckpt")
    (root / "artifacts").mkdir()
    (root / "artifacts" / "SBOM.cdx.json").write_text("{}")
    (root / "train_state" / "artifacts").mkdir()
    (root / "train_state" / "artifacts" / "x.bin").write_bytes(b"x")  # only the top-level folder is set apart
    paths = [entry["path"] for entry in write_manifest(root)["files"]]
    assert "train_state/artifacts/x.bin" in paths and not any(p.startswith("artifacts/") for p in paths)
    (root / "artifacts" / "RECEIPT.json").write_text("{}")
    assert verify_manifest(root) == []
