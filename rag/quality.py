"""Retrieval quality on labelled questions: recall@k and mean reciprocal rank (MRR).

A labelled question names the chunk that answers it by its document and the title of the Markdown section it
is in (the last entry of its heading path), so the labels survive changes to chunk sizes as long as each
section stays one chunk. Recall@k is the fraction of questions whose answering chunk is among the first k
results; MRR the mean of ``1 / rank`` of that chunk (0 when it is not found within the ranking's depth).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rag.chunks import Chunk
from rag.store import RagIndex, SearchMode
from specs.protocols import TextEmbedder


@dataclass(frozen=True, slots=True)
class LabelledQuestion:
    question: str
    source: str
    section: str

    def answers(self, chunk: Chunk) -> bool:
        return chunk.source == self.source and bool(chunk.headings) and chunk.headings[-1] == self.section


def load_questions(path: str | os.PathLike[str]) -> list[LabelledQuestion]:
    """One JSON object a line: ``{"question": ..., "source": ..., "section": ...}``."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [LabelledQuestion(**json.loads(line)) for line in lines if line.strip()]


def first_relevant_ranks(index: RagIndex, embedder: TextEmbedder | None, questions: Sequence[LabelledQuestion],
                         mode: SearchMode, depth: int = 10) -> list[int | None]:
    """Per question, the rank (from 1) of its answering chunk in the first ``depth`` results, or None."""
    vectors = embedder.embed([q.question for q in questions]) if mode != "lexical" and embedder else None
    found: list[int | None] = []
    for i, question in enumerate(questions):
        hits = index.search(question.question, None if vectors is None else vectors[i], depth, mode)
        found.append(next((rank for rank, hit in enumerate(hits, start=1) if question.answers(hit.chunk)), None))
    return found


def recall_at_k(ranks: Sequence[int | None], k: int) -> float:
    return sum(r is not None and r <= k for r in ranks) / len(ranks)


def mean_reciprocal_rank(ranks: Sequence[int | None]) -> float:
    return sum(0.0 if r is None else 1.0 / r for r in ranks) / len(ranks)
