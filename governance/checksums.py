"""``CHECKSUMS.sha256``: one ``<sha256 hex> *<relative path>`` line per file, as GNU ``sha256sum -b`` writes.

Paths are relative to a root directory (a release's DIR), so ``cd DIR && sha256sum --strict -c
artifacts/CHECKSUMS.sha256`` checks them. ``sha256sum -c`` without ``--strict`` skips a malformed line with a
warning, so :func:`check_checksums` rejects malformed lines itself: a line must be 64 lowercase hex digits, a
space, ``*`` and a relative path that stays inside the root. Paths holding a backslash or a newline are refused
when writing (GNU escapes those; we never need them).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from governance.files import GovernanceError, relative_inside, write_text
from specs.manifest import hash_file

_LINE = re.compile(r"([0-9a-f]{64}) \*(.+)")


def checksum_lines(root: Path, files: Iterable[Path]) -> str:
    """The checksum file's text for ``files`` (each under ``root``), sorted by path, one line each."""
    entries = {}
    for path in files:
        if not path.is_file():
            raise GovernanceError(f"{path}: no such file to checksum")
        rel = relative_inside(path, root)
        if "\\" in rel or "\n" in rel:
            raise GovernanceError(f"{rel}: a path with a backslash or newline cannot go in a checksum file")
        entries[rel] = hash_file(path)[1]
    if not entries:
        raise GovernanceError("no files to checksum")
    return "".join(f"{sha} *{rel}\n" for rel, sha in sorted(entries.items()))


def write_checksums(root: str | Path, files: Iterable[str | Path], out: str | Path) -> Path:
    """Hash ``files`` (relative to the current directory or absolute, all under ``root``) into ``out``."""
    root = Path(root)
    return write_text(out, checksum_lines(root, [Path(f) for f in files]))


def parse_checksums(text: str, name: str) -> tuple[dict[str, str], list[str]]:
    """``({relative path: sha256}, problems)``: every malformed or duplicate line is a problem naming it."""
    entries: dict[str, str] = {}
    problems = []
    if text and not text.endswith("\n"):
        problems.append(f"{name}: last line has no newline (truncated?)")
    for number, line in enumerate(text.splitlines(), 1):
        match = _LINE.fullmatch(line)
        if match is None:
            problems.append(f"{name} line {number}: malformed (want '<64 lowercase hex> *<relative path>'): {line!r}")
            continue
        sha, rel = match.groups()
        parts = PurePosixPath(rel)
        if parts.is_absolute() or ".." in parts.parts or "\\" in rel:
            problems.append(f"{name} line {number}: path {rel!r} leaves the release directory")
        elif rel in entries:
            problems.append(f"{name} line {number}: {rel} listed twice")
        else:
            entries[rel] = sha
    if not entries and not problems:
        problems.append(f"{name}: lists no files")
    return entries, problems


def check_checksums(root: str | Path, checksum_file: str | Path) -> tuple[dict[str, str], list[str]]:
    """Parse ``checksum_file`` and re-hash every file it lists under ``root``; return the entries and one
    problem per malformed line, missing file or mismatch (naming the file)."""
    root, checksum_file = Path(root), Path(checksum_file)
    name = checksum_file.name
    try:
        text = checksum_file.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}, [f"{name}: missing"]
    except UnicodeDecodeError:
        return {}, [f"{name}: not UTF-8 text"]
    entries, problems = parse_checksums(text, name)
    for rel, sha in entries.items():
        path = root / rel
        if not path.is_file():
            problems.append(f"{rel}: listed in {name} but missing")
        elif (found := hash_file(path)[1]) != sha:
            problems.append(f"{rel}: checksum mismatch (sha256 {found}, {name} says {sha})")
    return entries, problems
