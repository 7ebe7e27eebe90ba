"""ModelPack: a checkpoint directory as content-addressed blobs plus a manifest, for distribution.

A pack directory (served as is by any static HTTP server)::

    modelpack.json      {"format": "lmplanes-modelpack", "version": 1, "files": [
                           {"path": "model.safetensors", "size": ..., "sha256": "...", "cid": "bafkrei..."}, ...]}
    blobs/<cid>         each distinct file content once, named by its CIDv1 (raw, sha2-256; :mod:`export.cid`)

Every file of the checkpoint is listed (weights shards, config, card, tokenizer, ``MANIFEST.json``), so
``unpack`` rebuilds the directory byte for byte and ``model.load_checkpoint`` verifies it as usual. Identical
files (e.g. shards of two checkpoints sharing weights) are stored once.

A manifest is never trusted: :func:`parse_manifest` refuses paths that would leave the target directory
(absolute, ``..``, backslashes, empty parts), a ``cid`` that is not the one of its ``sha256`` (the blob name
comes from it), duplicate paths and malformed fields, one line per problem, before anything is fetched.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from export.artifact import staging_dir
from export.cid import cid_from_sha256, is_cid
from specs.manifest import hash_file

PACK_MANIFEST = "modelpack.json"
PACK_FORMAT = "lmplanes-modelpack"
PACK_VERSION = 1
BLOBS = "blobs"


class ModelPackError(ValueError):
    """A pack, its manifest or a fetched file is unusable; ``problems`` holds one line each."""

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("; ".join(self.problems))


@dataclass(frozen=True, slots=True)
class PackFile:
    """One file of a pack: where it goes (``path``, relative POSIX), its size, sha256 and CIDv1."""

    path: str
    size: int
    sha256: str
    cid: str

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "sha256": self.sha256, "cid": self.cid}


def pack(checkpoint: str | os.PathLike[str], out: str | os.PathLike[str]) -> list[PackFile]:
    """Write the pack of the directory ``checkpoint`` at ``out`` (missing or empty; written under a hidden
    temporary name and renamed into place) and return its file list."""
    source, target = Path(checkpoint), Path(out)
    if not source.is_dir():
        raise ModelPackError(f"{source}: not a directory")
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise FileExistsError(f"{target}: exists and is not an empty directory")
    files = []
    for path in sorted(source.rglob("*")):
        if path.is_symlink():
            raise ModelPackError(f"{path}: a symlink; a pack holds plain files only")
        if not path.is_file():
            continue
        size, sha = hash_file(path)
        files.append(PackFile(path.relative_to(source).as_posix(), size, sha, cid_from_sha256(sha)))
    if not files:
        raise ModelPackError(f"{source}: no files to pack")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = staging_dir(target)
    try:
        (staging / BLOBS).mkdir()
        for entry in files:
            blob = staging / BLOBS / entry.cid
            if not blob.exists():
                shutil.copyfile(source / entry.path, blob)
        manifest = {"format": PACK_FORMAT, "version": PACK_VERSION, "files": [f.to_json() for f in files]}
        (staging / PACK_MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return files


def parse_manifest(text: str | bytes) -> list[PackFile]:
    """The file list of a ``modelpack.json``, or :class:`ModelPackError` with every problem found."""
    try:
        data = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelPackError(f"{PACK_MANIFEST}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != PACK_FORMAT:
        raise ModelPackError(f"{PACK_MANIFEST}: not a ModelPack manifest (format is not {PACK_FORMAT!r})")
    if data.get("version") != PACK_VERSION:
        raise ModelPackError(f"{PACK_MANIFEST}: unsupported version {data.get('version')!r} (this reads {PACK_VERSION})")
    entries = data.get("files")
    if not isinstance(entries, list) or not entries:
        raise ModelPackError(f"{PACK_MANIFEST}: 'files' must be a non-empty list")
    problems, files, seen = [], [], set()
    for i, entry in enumerate(entries):
        where = f"{PACK_MANIFEST}: files[{i}]"
        if not isinstance(entry, dict) or set(entry) != {"path", "size", "sha256", "cid"}:
            problems.append(f"{where} must have exactly path, size, sha256 and cid")
            continue
        path, size, sha, cid = entry["path"], entry["size"], entry["sha256"], entry["cid"]
        if not isinstance(path, str) or not safe_relative_path(path):
            problems.append(f"{where}: path {path!r} escapes the target directory (absolute, '..' or not normal)")
        elif path in seen:
            problems.append(f"{where}: path {path!r} listed twice")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            problems.append(f"{where}: size {size!r} is not a non-negative integer")
        if not isinstance(sha, str) or len(sha) != 64 or not set(sha) <= set("0123456789abcdef"):
            problems.append(f"{where}: sha256 {sha!r} is not a lowercase hex digest")
        elif not isinstance(cid, str) or not is_cid(cid) or cid != cid_from_sha256(sha):
            problems.append(f"{where}: cid {cid!r} is not the CIDv1 of its sha256")
        seen.add(path)
        if not problems:
            files.append(PackFile(path, size, sha, cid))
    if problems:
        raise ModelPackError(problems)
    return files


def safe_relative_path(path: str) -> bool:
    """A relative POSIX path that stays inside the directory it is joined to: no leading ``/``, no ``..``,
    ``.`` or empty parts, no backslashes or NUL (which another OS or layer could read differently)."""
    if not path or "\\" in path or "\x00" in path:
        return False
    pure = PurePosixPath(path)
    return not pure.is_absolute() and pure.as_posix() == path and all(p not in ("", ".", "..") for p in pure.parts)


def place(root: Path, entry: PackFile) -> Path:
    """``root / entry.path``, checked once more after resolving (a symlink inside ``root`` could redirect it)."""
    destination = root / entry.path
    resolved_root = root.resolve()
    if resolved_root not in destination.resolve().parents:
        raise ModelPackError(f"{entry.path}: resolves outside {root}; refused")
    return destination
