"""Where a directory keeps its safetensors weights: one ``model.safetensors``, or shards named by a Hugging Face
style ``model.safetensors.index.json``. Shared by our checkpoints and Hugging Face imports and exports."""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path

from safetensors import SafetensorError

from specs.errors import CheckpointError

WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
_OS_ERROR = re.compile(r"\(os error (\d+)\)")


@contextlib.contextmanager
def safetensors_os_errors() -> Iterator[None]:
    """Re-raise a safetensors write that the operating system refused (a ``SafetensorError`` reading "I/O error:
    No space left on device (os error 28) ...") as that ``OSError``, so that it is reported like any other."""
    try:
        yield
    except SafetensorError as exc:
        found = _OS_ERROR.search(str(exc))
        if found is None:
            raise
        code = int(found.group(1))
        raise OSError(code, os.strerror(code)) from exc


def weight_files(root: Path) -> Mapping[str, list[str] | None]:
    """``{file: tensor names the index assigns to it}`` (``None`` for the unsharded single file)."""
    index_path, single = root / INDEX_NAME, root / WEIGHTS_NAME
    if index_path.is_file() and single.is_file():
        raise CheckpointError(f"both {WEIGHTS_NAME} and {INDEX_NAME} are present; which weights to load is ambiguous")
    if not index_path.is_file():
        if not single.is_file():
            raise CheckpointError(f"{WEIGHTS_NAME}: missing (and no {INDEX_NAME}); the checkpoint has no weights", root)
        return {WEIGHTS_NAME: None}
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{INDEX_NAME}: malformed, not valid JSON ({exc})", root) from None
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise CheckpointError(f"{INDEX_NAME}: malformed, expected a 'weight_map' of tensor name -> file", root)
    files: dict[str, list[str]] = {}
    for name, file in weight_map.items():
        files.setdefault(file, []).append(name)
    problems = []
    for file in sorted(files):
        if "/" in file or "\\" in file or file in ("", ".", ".."):
            problems.append(f"{INDEX_NAME}: weight_map names {file!r}, which is not a file of this directory")
        elif not (root / file).is_file():
            problems.append(f"{file}: missing (named by {INDEX_NAME} for {len(files[file])} tensors)")
    if problems:
        raise CheckpointError(problems, root)
    return files
