"""Read a corpus from files and folders into documents, recording where each came from.

A document is a whole file, unless a separator is given: then each file is split on it (``"\\n\\n"``: at blank
lines; ``"<|endoftext|>"``: at that marker). Documents with nothing but whitespace are dropped. A folder
contributes every file below it whose path has no hidden part, in sorted order. Files are read as UTF-8,
strictly: a file that is not UTF-8 text is an error that names it, never silently mangled.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from data.errors import DataError


@dataclass(frozen=True)
class Source:
    """An input file: its path as given, size, sha256 and the number of documents it gave."""

    path: str
    bytes: int
    sha256: str
    documents: int


def input_files(inputs: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """The files named by ``inputs`` (files, or folders searched recursively), in the order given."""
    if not inputs:
        raise DataError("no input files given")
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(
                p for p in path.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
            if not found:
                raise DataError(f"{path}: the folder holds no files")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise DataError(f"{path}: no such file or folder")
    return files


def read_documents(
    inputs: Sequence[str | os.PathLike[str]], *, doc_sep: str | None = None, progress: bool = False
) -> tuple[list[str], list[Source]]:
    """Every document of the inputs, in order, and one :class:`Source` per file read."""
    if doc_sep == "":
        raise DataError("the document separator cannot be empty")
    documents: list[str] = []
    sources: list[Source] = []
    for file in tqdm(input_files(inputs), desc="reading", unit="file", disable=not progress):
        raw = file.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(f"{file}: not UTF-8 text (byte {exc.start} cannot be decoded)") from exc
        pieces = [text] if doc_sep is None else text.split(doc_sep)
        found = [piece for piece in pieces if piece.strip()]
        documents.extend(found)
        sources.append(Source(str(file), len(raw), hashlib.sha256(raw).hexdigest(), len(found)))
    if not documents:
        raise DataError(f"the inputs hold no text ({len(sources)} file(s), all empty or whitespace)")
    return documents, sources
