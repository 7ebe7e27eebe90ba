"""``manifest.json`` of a token-shard directory: its format, and the checks made before any shard is trusted.

The manifest is written last (see :mod:`data.build`), so a directory with a manifest is a complete build.
Besides provenance and statistics it describes every file the build wrote, each with its ``path``,
``bytes`` and ``sha256``: ``splits.SPLIT.shards`` (in stream order, each also with its ``tokens`` and
``dtype``), ``splits.SPLIT.doc_starts`` and ``tokenizer.files``. Readers compare sizes always and sha256
sums on request.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from data.errors import DataError

MANIFEST_FILE = "manifest.json"
FORMAT = "lmplanes-token-shards"
VERSION = 1
TOKEN_DTYPES = ("uint16", "uint32")
DOC_STARTS_DTYPE = "int64"
_READ_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_READ_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def file_record(path: Path) -> dict[str, Any]:
    """What the manifest keeps of a written file: its name, size and sha256."""
    return {"path": path.name, "bytes": path.stat().st_size, "sha256": sha256_file(path)}


def written_files(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every file a build wrote (besides the manifest), by name, with its record."""
    records = {record["path"]: record for record in manifest["tokenizer"]["files"]}
    for split in manifest["splits"].values():
        records.update({shard["path"]: shard for shard in split["shards"]})
        records[split["doc_starts"]["path"]] = split["doc_starts"]
    return records


def read_manifest(directory: Path) -> dict[str, Any]:
    """The manifest of ``directory``, checked for its format, version and the fields readers rely on."""
    path = directory / MANIFEST_FILE
    if not path.is_file():
        hint = "" if directory.is_dir() else " (no such folder)"
        raise DataError(f"{directory}: no {MANIFEST_FILE}{hint}; it is not a finished token-shard build")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DataError(f"{path}: not a token-shard manifest (format is not {FORMAT!r})")
    if manifest.get("version") != VERSION:
        raise DataError(f"{path}: manifest version {manifest.get('version')!r} is not supported (this reads {VERSION})")
    missing = [key for key in ("dtype", "splits", "tokenizer") if key not in manifest]
    if missing:
        raise DataError(f"{path}: the manifest lacks {', '.join(missing)}")
    try:
        records = written_files(manifest).values()
        bad = [r for r in records if not (isinstance(r["bytes"], int) and isinstance(r["sha256"], str))]
    except (KeyError, TypeError, AttributeError) as exc:
        raise DataError(f"{path}: the manifest's file records are malformed ({exc!r})") from exc
    if bad:
        raise DataError(f"{path}: the manifest's record of {bad[0].get('path')!r} lacks a size or sha256")
    if manifest["dtype"] not in TOKEN_DTYPES:
        raise DataError(f"{path}: token dtype {manifest['dtype']!r} is not one of {', '.join(TOKEN_DTYPES)}")
    return manifest


def file_problems(directory: Path, records: Iterable[dict[str, Any]], *, full: bool) -> list[str]:
    """One line per file in ``records`` that is missing, of the wrong size or (``full``) of the wrong sha256."""
    problems = []
    for record in records:
        path = directory / record["path"]
        if not path.is_file():
            problems.append(f"{path}: missing")
        elif path.stat().st_size != record["bytes"]:
            problems.append(f"{path}: {path.stat().st_size} bytes, the manifest says {record['bytes']}")
        elif full and sha256_file(path) != record["sha256"]:
            problems.append(f"{path}: sha256 does not match the manifest (the file changed or is corrupt)")
    return problems


def verify_build(directory: str | Path, *, full: bool = True) -> dict[str, Any]:
    """Check every file a build wrote against its manifest (sha256 too when ``full``); return the manifest.

    Raises :class:`~data.errors.DataError` listing every problem found.
    """
    folder = Path(directory)
    manifest = read_manifest(folder)
    problems = file_problems(folder, written_files(manifest).values(), full=full)
    if problems:
        raise DataError(f"{folder} does not match its manifest: " + "; ".join(problems))
    return manifest
