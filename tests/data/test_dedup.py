"""Deduplication: exact duplicates after normalisation, near duplicates by MinHash/LSH at Jaccard 0.8."""

from __future__ import annotations

import random

import numpy as np
import pytest

from data.dedup import JACCARD_THRESHOLD, deduplicate, estimated_jaccard, minhash, normalise, shingle_hashes

WORDS = [f"word{i}" for i in range(3000)]


def _document(rng: random.Random, length: int = 300) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(length))


def _edit(rng: random.Random, text: str, changes: int) -> str:
    words = text.split()
    for _ in range(changes):
        words[rng.randrange(len(words))] = rng.choice(WORDS)
    return " ".join(words)


def _jaccard(a: str, b: str) -> float:
    sa, sb = set(shingle_hashes(a).tolist()), set(shingle_hashes(b).tolist())
    return len(sa & sb) / len(sa | sb)


def test_normalisation_ignores_case_width_and_spacing() -> None:
    assert normalise("  Ｈello\tWORLD \n\n again ") == "hello world again"


def test_exact_duplicates_after_normalisation_are_removed_keeping_the_first() -> None:
    docs = ["To be, or not to be", "to BE,  or not\nto be", "That is the question", "To be, or not to be"]
    keep, stats = deduplicate(docs)
    assert keep == [0, 2] and (stats.exact, stats.near, stats.kept) == (2, 0, 2)


def test_near_duplicates_are_removed_and_distinct_documents_kept() -> None:
    rng = random.Random(0)
    originals = [_document(rng) for _ in range(30)]
    light = [_edit(rng, d, 3) for d in originals[:10]]  # Jaccard ~0.9: duplicates
    heavy = [_edit(rng, d, 40) for d in originals[10:20]]  # Jaccard ~0.5: different documents
    assert all(_jaccard(a, b) > 0.85 for a, b in zip(originals, light))
    assert all(_jaccard(a, b) < 0.6 for a, b in zip(originals[10:], heavy))
    keep, stats = deduplicate(originals + light + heavy)
    assert keep == list(range(30)) + list(range(40, 50))
    assert (stats.exact, stats.near) == (0, 10)


def test_near_check_can_be_switched_off() -> None:
    rng = random.Random(1)
    doc = _document(rng)
    assert deduplicate([doc, _edit(rng, doc, 2)], near=False)[0] == [0, 1]


@pytest.mark.parametrize("changes", [2, 10, 30])
def test_minhash_estimates_the_jaccard_similarity(changes: int) -> None:
    rng = random.Random(changes)
    a = _document(rng, 400)
    b = _edit(rng, a, changes)
    estimate = estimated_jaccard(minhash(shingle_hashes(a)), minhash(shingle_hashes(b)))
    assert abs(estimate - _jaccard(a, b)) < 0.15  # 120 hashes: standard error <= 0.046


def test_short_and_wordless_documents() -> None:
    assert len(shingle_hashes("only three words")) == 1
    assert len(shingle_hashes("... !!! ---")) == 0
    keep, _ = deduplicate(["only three words", "Only three words.", "...", "!!!"])
    assert keep == [0, 2, 3]  # the second is a near duplicate (same single shingle); punctuation stays


def test_signatures_are_reproducible() -> None:
    shingles = shingle_hashes("the same text gives the same signature every time")
    assert np.array_equal(minhash(shingles), minhash(shingles.copy())) and JACCARD_THRESHOLD == 0.8
