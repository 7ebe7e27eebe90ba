"""A lexical index: Okapi BM25 over lowercased word tokens.

``score(q, d) = sum over query terms t of idf(t) * tf(t, d) * (k1 + 1) / (tf(t, d) + k1 * (1 - b + b * |d| / avgdl))``
with Lucene's non-negative ``idf(t) = ln(1 + (N - df(t) + 0.5) / (df(t) + 0.5))``; a query term that appears
twice counts twice. Tokens are runs of word characters (``\\w+``, Unicode-aware), lowercased. Ties are broken by
the smaller id, so results do not depend on insertion order.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from specs.config_files import atomic_write_text

_WORD = re.compile(r"\w+")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


class BM25Index:
    FILE = "bm25.json"

    def __init__(self, *, k1: float = 1.2, b: float = 0.75) -> None:
        self.k1, self.b = k1, b
        self.lengths: dict[int, int] = {}
        self.postings: dict[str, dict[int, int]] = {}  # term -> {id: count}
        self.total_length = 0

    def __len__(self) -> int:
        return len(self.lengths)

    def add(self, ids: Sequence[int], texts: Sequence[str]) -> None:
        if len(ids) != len(texts):
            raise ValueError(f"{len(ids)} ids for {len(texts)} texts")
        for key, text in zip(ids, texts):
            if key in self.lengths:
                raise ValueError(f"id {key} is already in the index")
            counts = Counter(words(text))
            self.lengths[key] = sum(counts.values())
            self.total_length += self.lengths[key]
            for term, count in counts.items():
                self.postings.setdefault(term, {})[key] = count

    def remove(self, ids: Sequence[int]) -> None:
        gone = {key for key in ids if key in self.lengths}
        for key in gone:
            self.total_length -= self.lengths.pop(key)
        for term in list(self.postings):
            found = self.postings[term]
            for key in gone & found.keys():
                del found[key]
            if not found:
                del self.postings[term]

    def search(self, query: str, k: int) -> list[tuple[int, float]]:
        """The ``k`` best ``(id, score)`` pairs (only documents sharing a term with the query)."""
        n = len(self.lengths)
        if n == 0:
            return []
        average = self.total_length / n
        scores: dict[int, float] = {}
        for term, repeats in Counter(words(query)).items():
            found = self.postings.get(term, {})
            idf = math.log(1 + (n - len(found) + 0.5) / (len(found) + 0.5))
            for key, tf in found.items():
                norm = tf + self.k1 * (1 - self.b + self.b * self.lengths[key] / average)
                scores[key] = scores.get(key, 0.0) + repeats * idf * tf * (self.k1 + 1) / norm
        return sorted(scores.items(), key=lambda item: (-item[1], item[0]))[:k]

    def save(self, folder: Path) -> None:
        state = {"k1": self.k1, "b": self.b, "lengths": {str(k): v for k, v in sorted(self.lengths.items())},
                 "postings": {t: {str(k): c for k, c in sorted(p.items())} for t, p in sorted(self.postings.items())}}
        atomic_write_text(folder / self.FILE, json.dumps(state, separators=(",", ":")) + "\n")

    @classmethod
    def load(cls, folder: Path) -> BM25Index:
        state = json.loads((folder / cls.FILE).read_text(encoding="utf-8"))
        index = cls(k1=state["k1"], b=state["b"])
        index.lengths = {int(k): v for k, v in state["lengths"].items()}
        index.postings = {t: {int(k): c for k, c in p.items()} for t, p in state["postings"].items()}
        index.total_length = sum(index.lengths.values())
        return index


def reciprocal_rank_fusion(rankings: Sequence[Sequence[int]], *, k: int = 60) -> list[tuple[int, float]]:
    """Fuse ranked id lists: each id scores ``sum 1 / (k + rank)`` over the lists it is in (rank from 1), best
    first, ties by the smaller id. ``k = 60`` is the constant of Cormack et al. (SIGIR 2009)."""
    fused: dict[int, float] = {}
    for ranking in rankings:
        for rank, key in enumerate(ranking, start=1):
            fused[key] = fused.get(key, 0.0) + 1.0 / (k + rank)
    return sorted(fused.items(), key=lambda item: (-item[1], item[0]))
