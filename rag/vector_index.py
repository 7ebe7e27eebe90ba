"""Dense vector indexes behind one interface, and the exact one (a matrix product in torch).

Vectors are float32 rows, compared by inner product (cosine similarity for the normalised embeddings that
:class:`rag.Embedder` makes). Every vector carries an int64 id chosen by the caller (the chunk store's), so
removing the chunks of a document is ``remove(ids)``. ``search`` returns ``(Q, k)`` scores and ids, best first;
when fewer than ``k`` vectors are stored the rest of a row is ``-inf`` / ``-1``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
from safetensors.torch import load_file, save_file


@runtime_checkable
class VectorIndex(Protocol):
    """What the chunk store asks of a dense index. ``save(folder)`` writes the index's own files into an existing
    folder; the class's ``load(folder, ...)`` reads them back, and a reloaded index returns the same results."""

    dim: int

    def __len__(self) -> int: ...

    def add(self, ids: Sequence[int], vectors: torch.Tensor) -> None: ...

    def remove(self, ids: Sequence[int]) -> None: ...

    def search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]: ...

    def save(self, folder: Path) -> None: ...


def check_vectors(vectors: torch.Tensor, dim: int, what: str = "vectors") -> torch.Tensor:
    """``vectors`` as a contiguous float32 CPU ``(N, dim)`` tensor, or a ValueError naming the wrong shape."""
    if vectors.dim() != 2 or vectors.shape[1] != dim:
        raise ValueError(f"{what} must be (N, {dim}), got {tuple(vectors.shape)}")
    return vectors.detach().to("cpu", torch.float32).contiguous()


def padded_topk(scores: torch.Tensor, ids: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` best of ``scores (Q, N)`` with their ``ids (N,)``, padded with ``-inf`` / ``-1`` past ``N``."""
    q = scores.shape[0]
    best, where = scores.topk(min(k, scores.shape[1]), dim=1)
    out_scores = torch.full((q, k), float("-inf"))
    out_ids = torch.full((q, k), -1, dtype=torch.int64)
    out_scores[:, : best.shape[1]] = best
    out_ids[:, : best.shape[1]] = ids[where]
    return out_scores, out_ids


class ExactIndex:
    """Every stored vector scored against every query: ``queries @ vectors.T`` (float32), then top-k. The
    reference the approximate indexes are measured against."""

    FILE = "dense.safetensors"

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.vectors = torch.empty(0, dim)
        self.ids = torch.empty(0, dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, ids: Sequence[int], vectors: torch.Tensor) -> None:
        vectors = check_vectors(vectors, self.dim)
        new = torch.as_tensor(list(ids), dtype=torch.int64)
        if len(new) != len(vectors):
            raise ValueError(f"{len(new)} ids for {len(vectors)} vectors")
        if torch.isin(new, self.ids).any() or len(new.unique()) != len(new):
            raise ValueError("an id is already in the index")
        self.vectors = torch.cat([self.vectors, vectors])
        self.ids = torch.cat([self.ids, new])

    def remove(self, ids: Sequence[int]) -> None:
        keep = ~torch.isin(self.ids, torch.as_tensor(list(ids), dtype=torch.int64))
        self.vectors, self.ids = self.vectors[keep], self.ids[keep]

    def search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        queries = check_vectors(queries, self.dim, "queries")
        return padded_topk(queries @ self.vectors.T, self.ids, k)

    def save(self, folder: Path) -> None:
        save_file({"vectors": self.vectors, "ids": self.ids}, str(folder / self.FILE))

    @classmethod
    def load(cls, folder: Path, dim: int) -> ExactIndex:
        tensors = load_file(str(folder / cls.FILE))
        index = cls(dim)
        index.vectors, index.ids = check_vectors(tensors["vectors"], dim), tensors["ids"]
        return index
