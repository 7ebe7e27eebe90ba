"""Split tokenised documents into ``train`` and ``val`` token streams, recording where each document starts.

- ``position``: the documents are concatenated and the stream is cut once: the first ``int(N * (1 - f))``
  tokens train, the rest validate. This is nanoGPT's shakespeare-char split (90/10 of one file). The document
  that straddles the cut continues as the first document of ``val``.
- ``document``: ``round(D * f)`` whole documents (at least one, if ``f > 0`` and there are two or more) are
  drawn for ``val`` by a permutation seeded with ``seed``; both splits keep the input order of their documents.
- ``auto``: ``position`` for a corpus of one document, ``document`` otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from data.errors import DataError

SPLIT_METHODS = ("auto", "position", "document")


@dataclass(frozen=True)
class TokenSplit:
    """One split: its token stream and the offsets in it where documents start (the first is 0)."""

    tokens: np.ndarray
    doc_starts: np.ndarray


def concatenate(documents: Sequence[np.ndarray], dtype: np.dtype) -> TokenSplit:
    lengths = np.array([len(d) for d in documents], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64) if len(documents) else lengths
    tokens = np.concatenate(documents).astype(dtype, copy=False) if documents else np.zeros(0, dtype=dtype)
    return TokenSplit(tokens, starts[lengths > 0])


def split_documents(
    documents: Sequence[np.ndarray], *, method: str, val_fraction: float, seed: int, dtype: np.dtype
) -> tuple[str, dict[str, TokenSplit]]:
    """The method used (``auto`` resolved) and the ``train`` and ``val`` splits."""
    if method not in SPLIT_METHODS:
        raise DataError(f"unknown split method {method!r}; choose one of {', '.join(SPLIT_METHODS)}")
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"the validation fraction must be at least 0 and below 1, got {val_fraction}")
    if method == "auto":
        method = "position" if len(documents) == 1 else "document"
    if method == "position":
        return method, _by_position(concatenate(documents, dtype), val_fraction)
    return method, _by_document(documents, val_fraction, seed, dtype)


def _by_position(whole: TokenSplit, val_fraction: float) -> dict[str, TokenSplit]:
    cut = int(len(whole.tokens) * (1.0 - val_fraction))
    starts = whole.doc_starts
    val_starts = starts[starts >= cut] - cut
    if cut < len(whole.tokens) and (len(val_starts) == 0 or val_starts[0] != 0):
        val_starts = np.concatenate([[0], val_starts]).astype(np.int64)  # the document cut in two
    return {
        "train": TokenSplit(whole.tokens[:cut], starts[starts < cut]),
        "val": TokenSplit(whole.tokens[cut:], val_starts),
    }


def _by_document(
    documents: Sequence[np.ndarray], val_fraction: float, seed: int, dtype: np.dtype
) -> dict[str, TokenSplit]:
    count = len(documents)
    n_val = round(count * val_fraction)
    if val_fraction > 0 and count >= 2:
        n_val = min(max(n_val, 1), count - 1)  # both splits get a document
    chosen = np.zeros(count, dtype=bool)
    chosen[np.random.Generator(np.random.PCG64(seed)).permutation(count)[:n_val]] = True
    return {
        "train": concatenate([d for d, is_val in zip(documents, chosen) if not is_val], dtype),
        "val": concatenate([d for d, is_val in zip(documents, chosen) if is_val], dtype),
    }
