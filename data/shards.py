"""Read one split of a token-shard build as a single stream of tokens over read-only memory maps.

Opening checks the manifest and the size of every file the split uses (``verify="sha256"`` hashes them too),
so a truncated or swapped shard is an error before any token is read. The shards of a split are one stream:
a window may run across a shard boundary. The memory maps open on first use, and a pickled
:class:`TokenShards` carries only paths, so DataLoader workers map the files themselves instead of receiving
copies of the data.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from data.errors import DataError
from data.manifest import DOC_STARTS_DTYPE, file_problems, read_manifest
from data.tokenizer import Tokenizer, load_tokenizer

VERIFY_LEVELS = ("size", "sha256")


class TokenShards:
    """The tokens of one split (``train``, ``val``) of the build in ``directory``."""

    def __init__(self, directory: str | os.PathLike[str], split: str = "train", *, verify: str = "size") -> None:
        if verify not in VERIFY_LEVELS:
            raise DataError(f"unknown verify level {verify!r}; choose one of {', '.join(VERIFY_LEVELS)}")
        self.directory = Path(directory)
        self.split = split
        self.manifest: dict[str, Any] = read_manifest(self.directory)
        splits = self.manifest["splits"]
        if split not in splits:
            raise DataError(f"{self.directory} has no split {split!r} (it has {', '.join(sorted(splits))})")
        entry = splits[split]
        self.dtype = np.dtype(self.manifest["dtype"])
        self._shard_names = [shard["path"] for shard in entry["shards"]]
        lengths = np.array([shard["tokens"] for shard in entry["shards"]], dtype=np.int64)
        records = [*entry["shards"], entry["doc_starts"], *self.manifest["tokenizer"]["files"]]
        problems = file_problems(self.directory, records, full=verify == "sha256")
        problems += self._disagreements(entry)
        if problems:
            raise DataError(f"{self.directory} ({split}) does not match its manifest: " + "; ".join(problems))
        self.num_tokens = int(lengths.sum())
        if self.num_tokens == 0:
            raise DataError(f"the {split!r} split of {self.directory} holds no tokens")
        self._shard_starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        doc_starts_type = np.dtype(DOC_STARTS_DTYPE).newbyteorder("<")
        self.doc_starts = np.fromfile(self.directory / entry["doc_starts"]["path"], dtype=doc_starts_type)
        self._maps: list[np.ndarray] | None = None

    def _disagreements(self, entry: dict[str, Any]) -> list[str]:
        """Shards whose dtype or byte size does not fit their token count, and a split total that does not add
        up: a manifest edited by hand, or one that does not belong to these files."""
        problems = []
        for shard in entry["shards"]:
            if shard.get("dtype") != self.dtype.name or shard["bytes"] != shard["tokens"] * self.dtype.itemsize:
                problems.append(f"{shard['path']}: {shard['bytes']} bytes of {shard.get('dtype')} do not hold "
                                f"{shard['tokens']} {self.dtype.name} tokens")
        if sum(shard["tokens"] for shard in entry["shards"]) != entry["tokens"]:
            problems.append(f"the shards hold {sum(s['tokens'] for s in entry['shards'])} tokens, the split says "
                            f"{entry['tokens']}")
        return problems

    def __len__(self) -> int:
        return self.num_tokens

    def __repr__(self) -> str:
        return f"TokenShards({str(self.directory)!r}, {self.split!r}: {self.num_tokens} {self.dtype.name} tokens)"

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_maps": None}  # workers map the files again rather than receive the data

    def tokenizer(self) -> Tokenizer:
        """The tokenizer saved beside the shards."""
        return load_tokenizer(self.directory)

    @property
    def vocab_size(self) -> int:
        return int(self.manifest["tokenizer"]["vocab_size"])

    def _shards(self) -> list[np.ndarray]:
        if self._maps is None:
            # Plain ndarray views of read-only memory maps: the memmap subclass adds overhead to every gather.
            self._maps = [
                np.memmap(self.directory / name, dtype=self.dtype, mode="r").view(np.ndarray)
                for name in self._shard_names
            ]
        return self._maps

    def read(self, start: int, stop: int) -> np.ndarray:
        """Tokens ``[start, stop)`` of the stream as int64."""
        return self.windows(np.array([start], dtype=np.int64), stop - start)[0]

    def windows(self, starts: np.ndarray, length: int) -> np.ndarray:
        """A ``(len(starts), length)`` int64 array: row ``i`` is tokens ``[starts[i], starts[i] + length)``.

        One vectorised gather per shard touched, no loop over rows: this runs in the training hot loop.
        """
        starts = np.asarray(starts, dtype=np.int64)
        if length < 0 or (len(starts) and (starts.min() < 0 or starts.max() > self.num_tokens - length)):
            raise DataError(f"windows of {length} tokens starting at {starts.tolist()} run outside the "
                            f"{self.num_tokens} tokens of the {self.split!r} split")
        index = starts[:, None] + np.arange(length, dtype=np.int64)
        shards = self._shards()
        if len(shards) == 1:
            return shards[0][index].astype(np.int64)
        out = np.empty(index.shape, dtype=np.int64)
        which = np.searchsorted(self._shard_starts, index, side="right") - 1
        for shard in np.unique(which):
            mask = which == shard
            out[mask] = shards[shard][index[mask] - self._shard_starts[shard]]
        return out

