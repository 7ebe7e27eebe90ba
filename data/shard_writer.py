"""Write one split as token shards: flat little-endian arrays of ``shard_size`` tokens (the last one shorter),
named ``SPLIT-00000.bin`` ..., plus ``SPLIT-doc-starts.bin`` (int64 offsets where documents start).

Flat arrays with no header, as nanoGPT writes ``train.bin``: ``numpy.memmap(path, dtype, mode="r")`` reads one,
and so does any tool that knows the dtype from the manifest.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from data.manifest import DOC_STARTS_DTYPE
from data.splits import TokenSplit


def _write_array(path: Path, array: np.ndarray) -> dict[str, Any]:
    """Write ``array``'s bytes to ``path``; return its manifest record, hashed from memory (no second read)."""
    flat = np.ascontiguousarray(array.astype(array.dtype.newbyteorder("<"), copy=False))
    with open(path, "wb") as fh:
        flat.tofile(fh)
    digest = hashlib.sha256(flat.data.cast("B")).hexdigest()  # contiguous above, so its buffer is the bytes
    return {"path": path.name, "bytes": flat.nbytes, "sha256": digest, "dtype": array.dtype.name}


def write_split(folder: Path, name: str, split: TokenSplit, dtype: np.dtype, shard_size: int) -> dict[str, Any]:
    """Write ``split`` into ``folder``; return its manifest entry, with the records of the files written."""
    tokens = split.tokens.astype(dtype, copy=False)
    shards = []
    for index, start in enumerate(range(0, len(tokens), shard_size)):
        piece = tokens[start : start + shard_size]
        shards.append({**_write_array(folder / f"{name}-{index:05d}.bin", piece), "tokens": len(piece)})
    doc_starts = _write_array(folder / f"{name}-doc-starts.bin", split.doc_starts.astype(DOC_STARTS_DTYPE))
    return {
        "tokens": len(tokens),
        "documents": len(split.doc_starts),
        "shards": shards,
        "doc_starts": {**doc_starts, "count": len(split.doc_starts)},
    }
