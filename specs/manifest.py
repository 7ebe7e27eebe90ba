"""``MANIFEST.json``: every file of a checkpoint directory with its size and sha256, plus a content id.

The manifest is written last (so a directory with a manifest is a complete one) and atomically. Its
``content_id`` is ``"sha256:"`` + the sha256 of the canonical JSON of the file list (keys sorted, no
whitespace, ASCII), so two checkpoints with the same files have the same id whatever their path or mtime;
model cards name parent checkpoints by it.

:func:`verify_manifest` re-hashes every file and returns one problem per line, each naming the file at fault;
loaders raise :class:`CheckpointError` with all of them.

File-level and torch-free, so that ``governance`` (which must not import ``model``) reads and checks manifests
with the same code that ``model`` writes them with.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from specs.config_files import atomic_write_text
from specs.errors import CheckpointError

MANIFEST_NAME = "MANIFEST.json"
MANIFEST_FORMAT = "lmplanes-manifest"
MANIFEST_VERSION = 1
# Release artifacts (SBOMs, signed checksums, receipt ...) that ``governance`` writes into a finished
# checkpoint: they describe the checkpoint and are checked by ``python -m governance verify``, not part of it.
RELEASE_DIR = "artifacts"
_CHUNK = 1 << 20  # 1 MiB


def hash_file(path: str | os.PathLike[str]) -> tuple[int, str]:
    """``(size, sha256 hex)`` of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def content_id(files: list[dict[str, Any]]) -> str:
    """The content id of a manifest's file list: sha256 of its canonical JSON."""
    canonical = json.dumps(files, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return "sha256:" + hashlib.sha256(canonical.encode("ascii")).hexdigest()


def _tree(root: Path) -> list[str]:
    """Every file under ``root`` as a sorted POSIX relative path, ``MANIFEST.json`` itself and the top-level
    ``artifacts/`` folder (:data:`RELEASE_DIR`) left out.

    Symlinked directories are not followed (a checkpoint never contains one; a symlinked file is hashed
    through the link)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        if Path(dirpath) == root and RELEASE_DIR in dirnames:
            dirnames.remove(RELEASE_DIR)
        for name in filenames:
            rel = (Path(dirpath) / name).relative_to(root).as_posix()
            if rel != MANIFEST_NAME:
                found.append(rel)
    return sorted(found)


def write_manifest(
    directory: str | os.PathLike[str], *, known: Mapping[str, tuple[int, str]] | None = None
) -> dict[str, Any]:
    """Hash every file under ``directory`` and write ``MANIFEST.json`` atomically; return the manifest.

    ``known`` maps relative paths to ``(size, sha256)`` just computed by the caller for files it wrote; a
    file whose size still matches is not hashed a second time.
    """
    root = Path(directory)
    if not root.is_dir():
        raise NotADirectoryError(f"{root}: not a directory")
    known = known or {}
    files = []
    for rel in _tree(root):
        size = (root / rel).stat().st_size
        if rel in known and known[rel][0] == size:
            sha = known[rel][1]
        else:
            size, sha = hash_file(root / rel)
        files.append({"path": rel, "size": size, "sha256": sha})
    manifest = {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "files": files, "content_id": content_id(files)}
    atomic_write_text(root / MANIFEST_NAME, json.dumps(manifest, indent=2) + "\n")
    return manifest


def read_manifest(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse and check the shape of ``MANIFEST.json``; raise :class:`CheckpointError` if it is unusable."""
    root = Path(directory)
    manifest, problems = _parse(root / MANIFEST_NAME)
    if problems:
        raise CheckpointError(problems, root)
    return manifest


def listed_paths(directory: str | os.PathLike[str]) -> set[str] | None:
    """The relative paths an lmplanes ``MANIFEST.json`` in ``directory`` lists (the manifest itself included),
    or None when there is no readable manifest of this format. Hashes are not checked: this answers "is this
    directory one of ours, and which of its files are", not "is it intact"."""
    try:
        data = json.loads((Path(directory) / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT or not isinstance(data.get("files"), list):
        return None
    paths = {entry.get("path") for entry in data["files"] if isinstance(entry, dict)}
    return {p for p in paths if isinstance(p, str) and _safe_relpath(p)} | {MANIFEST_NAME}


def verify_manifest(directory: str | os.PathLike[str]) -> list[str]:
    """Check a directory against its ``MANIFEST.json``: one problem string per problem, empty when intact."""
    root = Path(directory)
    if not root.is_dir():
        return [f"{root}: not a directory"]
    manifest, problems = _parse(root / MANIFEST_NAME)
    if problems:
        return problems
    files = manifest["files"]
    if manifest["content_id"] != content_id(files):
        problems.append(
            f"{MANIFEST_NAME}: content_id {manifest['content_id']} does not match its file list "
            f"({content_id(files)}); the manifest was edited"
        )
    listed = set()
    for entry in files:
        rel = entry["path"]
        listed.add(rel)
        path = root / rel
        if not path.is_file():
            problems.append(f"{rel}: listed in {MANIFEST_NAME} but missing")
            continue
        size = path.stat().st_size
        if size != entry["size"]:
            problems.append(f"{rel}: size {size} bytes, {MANIFEST_NAME} says {entry['size']} (truncated or extended)")
            continue
        _, sha = hash_file(path)
        if sha != entry["sha256"]:
            problems.append(f"{rel}: sha256 {sha} does not match {MANIFEST_NAME} ({entry['sha256']}); content changed")
    for rel in _tree(root):
        if rel not in listed:
            problems.append(f"{rel}: present but not listed in {MANIFEST_NAME}")
    return problems


def _parse(path: Path) -> tuple[dict[str, Any], list[str]]:
    """Load the manifest and check its structure; return it with the problems found (if any)."""
    name = MANIFEST_NAME
    if not path.is_file():
        return {}, [f"{name}: missing (the checkpoint was not completely written, or is not a checkpoint)"]
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return {}, [f"{name}: malformed, not valid JSON ({exc})"]
    if not isinstance(data, dict):
        return {}, [f"{name}: malformed, expected a JSON object, got {type(data).__name__}"]
    problems = []
    if data.get("format") != MANIFEST_FORMAT:
        problems.append(f"{name}: malformed, format is {data.get('format')!r}, expected {MANIFEST_FORMAT!r}")
    if data.get("version") != MANIFEST_VERSION:
        problems.append(f"{name}: unsupported version {data.get('version')!r} (this lmplanes reads {MANIFEST_VERSION})")
    if not isinstance(data.get("content_id"), str):
        problems.append(f"{name}: malformed, content_id missing or not a string")
    files = data.get("files")
    if not isinstance(files, list):
        return data, [*problems, f"{name}: malformed, 'files' missing or not a list"]
    seen = set()
    for i, entry in enumerate(files):
        where = f"{name}: malformed, files[{i}]"
        if not isinstance(entry, dict) or set(entry) != {"path", "size", "sha256"}:
            problems.append(f"{where} must be an object with exactly path, size and sha256")
            continue
        rel, size, sha = entry["path"], entry["size"], entry["sha256"]
        if not isinstance(rel, str) or not _safe_relpath(rel):
            problems.append(f"{where}: path {rel!r} is not a relative path inside the checkpoint")
        elif rel in seen or rel == MANIFEST_NAME:
            problems.append(f"{where}: path {rel!r} listed twice (or names the manifest itself)")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            problems.append(f"{where}: size {size!r} is not a non-negative integer")
        if not isinstance(sha, str) or len(sha) != 64 or not set(sha) <= set("0123456789abcdef"):
            problems.append(f"{where}: sha256 {sha!r} is not a lowercase hex digest")
        if isinstance(rel, str):
            seen.add(rel)
    return data, problems


def _safe_relpath(rel: str) -> bool:
    p = PurePosixPath(rel)
    return bool(rel) and "\\" not in rel and not p.is_absolute() and ".." not in p.parts and p.as_posix() == rel
