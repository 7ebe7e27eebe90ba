"""Remove duplicate documents: exact duplicates by hash, near duplicates by MinHash with LSH.

Both compare *normalised* text: Unicode NFKC, case-folded, runs of whitespace collapsed to one space.

- exact: two documents whose normalised texts have the same sha256 are duplicates;
- near: two documents whose sets of word 5-gram shingles (words = runs of letters/digits in the normalised
  text) have an estimated Jaccard similarity of at least 0.8. The estimate is the share of 120 MinHash values
  that agree. Candidate pairs come from locality-sensitive hashing over 20 bands of 6 values: a pair at
  Jaccard 0.8 shares a band with probability 1 - (1 - 0.8**6)**20 = 0.998, and each candidate is then checked
  against the 0.8 threshold on all 120 values.

The first document of a group is kept, in input order, so the result is deterministic. A document too short
for one shingle is one shingle of all its words; one without words is left to the exact check.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

SHINGLE_WORDS = 5
JACCARD_THRESHOLD = 0.8
NUM_HASHES = 120
BANDS = 20
ROWS = NUM_HASHES // BANDS

_WORD = re.compile(r"\w+")
_MASK64 = (1 << 64) - 1
# Per-function seeds for the MinHash family: fixed, so signatures (and dedup results) never vary between runs.
_SEEDS = np.random.Generator(np.random.PCG64(20260101)).integers(0, 2**63, NUM_HASHES, dtype=np.uint64)
_SHINGLE_CHUNK = 4096  # shingles hashed at a time, bounding memory to chunk x NUM_HASHES x 8 bytes


def normalise(text: str) -> str:
    """The form documents are compared in: NFKC, case-folded, whitespace runs collapsed, ends stripped."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def exact_key(text: str) -> bytes:
    return hashlib.sha256(normalise(text).encode("utf-8")).digest()


def _mix64(values: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijection on 64-bit words that scatters nearby inputs (wraps on purpose)."""
    values = (values ^ (values >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    values = (values ^ (values >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return values ^ (values >> np.uint64(31))


def _word_hash(word: str) -> int:
    return int.from_bytes(hashlib.blake2b(word.encode("utf-8"), digest_size=8).digest(), "little")


def shingle_hashes(text: str, cache: dict[str, int] | None = None) -> np.ndarray:
    """64-bit hashes of the word ``SHINGLE_WORDS``-grams of ``normalise(text)`` (empty without words)."""
    cache = {} if cache is None else cache
    words = _WORD.findall(normalise(text))
    if not words:
        return np.zeros(0, dtype=np.uint64)
    for word in words:
        if word not in cache:
            cache[word] = _word_hash(word)
    hashes = np.array([cache[word] for word in words], dtype=np.uint64)
    width = min(SHINGLE_WORDS, len(hashes))
    count = len(hashes) - width + 1
    # An order-sensitive combination of each window's word hashes: sum of mix64(word hash + offset).
    combined = np.zeros(count, dtype=np.uint64)
    for offset in range(width):
        combined += _mix64(hashes[offset : offset + count] + np.uint64(offset + 1))
    return combined


def minhash(shingles: np.ndarray) -> np.ndarray:
    """The ``NUM_HASHES`` MinHash signature of a non-empty set of shingle hashes."""
    signature = np.full(NUM_HASHES, np.iinfo(np.uint64).max, dtype=np.uint64)
    for start in range(0, len(shingles), _SHINGLE_CHUNK):
        chunk = shingles[start : start + _SHINGLE_CHUNK]
        np.minimum(signature, _mix64(chunk[:, None] ^ _SEEDS[None, :]).min(axis=0), out=signature)
    return signature


def estimated_jaccard(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(a == b))


@dataclass
class DedupStats:
    """How many documents each check removed."""

    exact: int = 0
    near: int = 0
    kept: int = 0

    def as_manifest(self) -> dict[str, object]:
        return {
            "exact_removed": self.exact,
            "near_removed": self.near,
            "kept": self.kept,
            "normalisation": "NFKC, case-folded, whitespace collapsed",
            "near": {
                "method": "MinHash over word shingles, LSH candidates",
                "shingle_words": SHINGLE_WORDS,
                "jaccard_threshold": JACCARD_THRESHOLD,
                "num_hashes": NUM_HASHES,
                "bands": BANDS,
                "rows_per_band": ROWS,
            },
        }


class _NearIndex:
    """The signatures of kept documents, bucketed by band for LSH lookups."""

    def __init__(self) -> None:
        self._signatures: list[np.ndarray] = []
        self._buckets: list[dict[bytes, list[int]]] = [defaultdict(list) for _ in range(BANDS)]

    def _bands(self, signature: np.ndarray) -> Iterator[tuple[int, bytes]]:
        for band in range(BANDS):
            yield band, signature[band * ROWS : (band + 1) * ROWS].tobytes()

    def has_near_duplicate(self, signature: np.ndarray) -> bool:
        seen: set[int] = set()
        for band, key in self._bands(signature):
            for candidate in self._buckets[band].get(key, ()):
                if candidate not in seen:
                    seen.add(candidate)
                    if estimated_jaccard(signature, self._signatures[candidate]) >= JACCARD_THRESHOLD:
                        return True
        return False

    def add(self, signature: np.ndarray) -> None:
        index = len(self._signatures)
        self._signatures.append(signature)
        for band, key in self._bands(signature):
            self._buckets[band][key].append(index)


def deduplicate(texts: Iterable[str], *, near: bool = True) -> tuple[list[int], DedupStats]:
    """Indices of the documents to keep (the first of each duplicate group, in order), and the counts."""
    stats = DedupStats()
    keep: list[int] = []
    seen_exact: set[bytes] = set()
    index = _NearIndex()
    words: dict[str, int] = {}
    for position, text in enumerate(texts):
        key = exact_key(text)
        if key in seen_exact:
            stats.exact += 1
            continue
        seen_exact.add(key)
        shingles = shingle_hashes(text, words) if near else np.zeros(0, dtype=np.uint64)
        if len(shingles):
            signature = minhash(shingles)
            if index.has_near_duplicate(signature):
                stats.near += 1
                continue
            index.add(signature)
        keep.append(position)
    stats.kept = len(keep)
    return keep, stats
