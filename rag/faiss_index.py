"""FAISS indexes (``faiss-cpu``, the ``rag`` extra): exact (``IndexFlatIP``), HNSW graphs and IVF-Flat
inverted lists, all by inner product and keyed by the caller's int64 ids.

HNSW finds neighbours by walking a graph (no training; recall set by ``ef_search``); IVF-Flat clusters the
vectors into ``nlist`` lists (k-means on the first vectors added) and scans ``nprobe`` of them per query. A
graph cannot drop a node, so removing from an HNSW index rebuilds it from the vectors it keeps (one build's
cost, paid per delete). ``save`` writes FAISS's own file: a reloaded index is the same graph or lists, so it
returns exactly what it returned before.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from rag.vector_index import check_vectors

FaissKind = Literal["flat", "hnsw", "ivf"]


def _faiss() -> Any:
    try:
        import faiss
    except ImportError:
        raise ImportError("the FAISS indexes need faiss-cpu: pip install 'lmplanes[rag]'") from None
    return faiss


class FaissIndex:
    """A FAISS index of ``kind``. ``m`` / ``ef_construction`` / ``ef_search``: HNSW's links per node and search
    breadths at build and query time. ``nlist`` (default about ``sqrt(N)`` of the first vectors added, at
    least 39 of them per list, as FAISS asks) / ``nprobe``: IVF's lists and the lists scanned per query."""

    FILE = "dense.faiss"

    def __init__(self, dim: int, kind: FaissKind = "hnsw", *, m: int = 32, ef_construction: int = 200,
                 ef_search: int = 128, nlist: int | None = None, nprobe: int = 16) -> None:
        self.dim, self.kind = dim, kind
        self.m, self.ef_construction, self.ef_search = m, ef_construction, ef_search
        self.nlist, self.nprobe = nlist, nprobe
        self.index: Any = None if kind == "ivf" else self._empty()  # IVF is made when its first vectors arrive

    def _empty(self, train: np.ndarray | None = None) -> Any:
        faiss = _faiss()
        if self.kind == "flat":
            return faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))
        if self.kind == "hnsw":
            inner = faiss.IndexHNSWFlat(self.dim, self.m, faiss.METRIC_INNER_PRODUCT)
            inner.hnsw.efConstruction = self.ef_construction
            return faiss.IndexIDMap2(inner)
        assert train is not None
        nlist = self.nlist or max(1, min(round(math.sqrt(len(train))), len(train) // 39))
        quantizer = faiss.IndexFlatIP(self.dim)
        index = faiss.IndexIVFFlat(quantizer, self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(train)
        index.quantizer_trains_alone = 0
        self.nlist = nlist
        return index

    def _inner(self) -> Any:
        faiss = _faiss()
        return faiss.downcast_index(self.index.index) if isinstance(self.index, faiss.IndexIDMap2) else self.index

    def __len__(self) -> int:
        return 0 if self.index is None else int(self.index.ntotal)

    def add(self, ids: Sequence[int], vectors: torch.Tensor) -> None:
        array = check_vectors(vectors, self.dim).numpy()
        keys = np.asarray(list(ids), dtype=np.int64)
        if len(keys) != len(array):
            raise ValueError(f"{len(keys)} ids for {len(array)} vectors")
        if len(array) == 0:
            return
        if self.index is None:
            self.index = self._empty(array)
        self.index.add_with_ids(array, keys)

    def remove(self, ids: Sequence[int]) -> None:
        keys = np.asarray(list(ids), dtype=np.int64)
        if self.index is None or len(keys) == 0:
            return
        if self.kind != "hnsw":
            self.index.remove_ids(keys)
            return
        stored = _faiss().vector_to_array(self.index.id_map)
        keep = ~np.isin(stored, keys)
        vectors = self._inner().reconstruct_n(0, len(stored))[keep]
        self.index = self._empty()
        self.add(stored[keep].tolist(), torch.from_numpy(vectors))

    def search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        array = check_vectors(queries, self.dim, "queries").numpy()
        if len(self) == 0:
            return torch.full((len(array), k), float("-inf")), torch.full((len(array), k), -1, dtype=torch.int64)
        inner = self._inner()
        if self.kind == "hnsw":
            inner.hnsw.efSearch = max(self.ef_search, k)
        elif self.kind == "ivf":
            inner.nprobe = self.nprobe
        scores, ids = self.index.search(array, k)
        scores = torch.from_numpy(scores)
        ids = torch.from_numpy(ids)
        return scores.masked_fill(ids < 0, float("-inf")), ids

    def save(self, folder: Path) -> None:
        if self.index is not None:
            _faiss().write_index(self.index, str(folder / self.FILE))

    @classmethod
    def load(cls, folder: Path, dim: int, kind: FaissKind, **params: Any) -> FaissIndex:
        index = cls(dim, kind, **params)
        if (folder / cls.FILE).is_file():
            index.index = _faiss().read_index(str(folder / cls.FILE))
            if kind == "ivf":
                index.nlist = int(index.index.nlist)
        return index
