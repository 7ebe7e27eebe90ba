"""The chunk store with its indexes: what ``lmplanes rag index`` writes and ``rag ask`` reads.

A :class:`RagIndex` gives every chunk an int64 id, keeps the chunks, one dense index over their embeddings
(:class:`rag.ExactIndex` or a :class:`rag.FaissIndex`) and optionally a BM25 index over their text, and
searches them densely, lexically or both fused by reciprocal rank. Deleting a document removes its chunks from
all three.

On disk (a folder): ``index.json`` (format, settings, the encoder that made the vectors, the next id),
``chunks.jsonl`` (one chunk a line, with its id), the dense index's file, ``bm25.json``, and ``MANIFEST.json``
(every file's size and sha256, written last; :mod:`specs.manifest`). The folder is written beside the target
and renamed into place; loading checks the manifest and every chunk's sha256 first, so a reload either finds
exactly what was saved or names what changed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from rag.bm25 import BM25Index, reciprocal_rank_fusion
from rag.chunks import Chunk, text_sha256
from rag.faiss_index import FaissIndex
from rag.vector_index import ExactIndex, VectorIndex
from specs.config_files import atomic_write_text
from specs.config_io import FieldProblem
from specs.errors import CheckpointError
from specs.manifest import verify_manifest, write_manifest

DenseKind = Literal["exact", "flat", "hnsw", "ivf"]
SearchMode = Literal["dense", "lexical", "hybrid"]
FORMAT = "lmplanes-rag-index"
VERSION = 1
INDEX_FILE = "index.json"
CHUNKS_FILE = "chunks.jsonl"


@dataclass(frozen=True, kw_only=True, slots=True)
class IndexConfig:
    """``dense``: ``exact`` (torch), or FAISS ``flat`` (exact), ``hnsw``, ``ivf`` (IVF-Flat), with their
    parameters (see :class:`rag.FaissIndex`). ``bm25``: keep a lexical index too (needed by the ``lexical``
    and ``hybrid`` modes). ``candidates``: how many results of each ranking the hybrid mode fuses.
    ``rrf_k``: the fusion constant."""

    dense: DenseKind = "exact"
    bm25: bool = True
    hnsw_m: int = 32
    ef_construction: int = 200
    ef_search: int = 128
    nlist: int | None = None
    nprobe: int = 16
    candidates: int = 50
    rrf_k: int = 60

    def __post_init__(self) -> None:
        for name in ("hnsw_m", "ef_construction", "ef_search", "nprobe", "candidates", "rrf_k"):
            if getattr(self, name) < 1:
                raise FieldProblem(name, f"must be >= 1, got {getattr(self, name)}")
        if self.nlist is not None and self.nlist < 1:
            raise FieldProblem("nlist", f"must be >= 1, got {self.nlist}")


@dataclass(frozen=True, slots=True)
class Hit:
    """A retrieved chunk, its id and its score (cosine similarity, BM25 score or fused reciprocal rank)."""

    id: int
    chunk: Chunk
    score: float


class RagIndex:
    """Chunks, their dense index and (with ``cfg.bm25``) a BM25 index. ``encoder`` describes the model the
    vectors came from (saved with the index, so queries are embedded by the same one)."""

    def __init__(self, dim: int, cfg: IndexConfig | None = None, *, encoder: Mapping[str, Any] | None = None) -> None:
        self.dim = dim
        self.cfg = cfg or IndexConfig()
        self.encoder = dict(encoder or {})
        self.chunks: dict[int, Chunk] = {}
        self.next_id = 0
        self.dense: VectorIndex = _dense(self.cfg, dim)
        self.lexical = BM25Index() if self.cfg.bm25 else None

    def __len__(self) -> int:
        return len(self.chunks)

    def sources(self) -> list[str]:
        return sorted({chunk.source for chunk in self.chunks.values()})

    def add(self, chunks: Sequence[Chunk], vectors: torch.Tensor) -> list[int]:
        """Store ``chunks`` with their embeddings ``(len(chunks), dim)``; return their ids."""
        if len(chunks) != len(vectors):
            raise ValueError(f"{len(chunks)} chunks for {len(vectors)} vectors")
        ids = list(range(self.next_id, self.next_id + len(chunks)))
        self.dense.add(ids, vectors)
        if self.lexical is not None:
            self.lexical.add(ids, [c.embedding_text() for c in chunks])
        self.chunks.update(zip(ids, chunks))
        self.next_id += len(chunks)
        return ids

    def delete_document(self, source: str) -> int:
        """Remove every chunk of ``source``; return how many there were."""
        ids = [key for key, chunk in self.chunks.items() if chunk.source == source]
        self.dense.remove(ids)
        if self.lexical is not None:
            self.lexical.remove(ids)
        for key in ids:
            del self.chunks[key]
        return len(ids)

    def search(self, query: str, query_vector: torch.Tensor | None, k: int, mode: SearchMode = "hybrid") -> list[Hit]:
        """The ``k`` best chunks for ``query`` (``query_vector``: its embedding, ``(dim,)``; not needed for
        ``lexical``)."""
        if mode != "dense" and self.lexical is None:
            raise ValueError(f"the {mode} mode needs the BM25 index, and this index was built without one")
        if mode != "lexical" and query_vector is None:
            raise ValueError(f"the {mode} mode needs the query's embedding")
        if mode == "dense":
            assert query_vector is not None
            return self._hits(self._dense_ranking(query_vector, k))
        assert self.lexical is not None
        if mode == "lexical":
            return self._hits(self.lexical.search(query, k))
        assert query_vector is not None
        depth = max(k, self.cfg.candidates)
        rankings = [[key for key, _ in self._dense_ranking(query_vector, depth)],
                    [key for key, _ in self.lexical.search(query, depth)]]
        return self._hits(reciprocal_rank_fusion(rankings, k=self.cfg.rrf_k)[:k])

    def _dense_ranking(self, query_vector: torch.Tensor, k: int) -> list[tuple[int, float]]:
        scores, ids = self.dense.search(query_vector.reshape(1, -1), k)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]

    def _hits(self, ranked: list[tuple[int, float]]) -> list[Hit]:
        return [Hit(key, self.chunks[key], score) for key, score in ranked]

    # ------------------------------------------------------------------------------------------------- files

    def save(self, folder: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write the index to ``folder`` (see the module's docstring); an existing folder is replaced only with
        ``overwrite`` and only when it is an index."""
        target = Path(folder)
        if target.exists() and not overwrite:
            raise FileExistsError(17, "already exists (pass overwrite to replace it)", str(target))
        if target.exists() and not (target / INDEX_FILE).is_file():
            raise FileExistsError(17, f"exists and is not a rag index (no {INDEX_FILE}); not replaced", str(target))
        target.parent.mkdir(parents=True, exist_ok=True)
        staged = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            header = {"format": FORMAT, "version": VERSION, "dim": self.dim, "next_id": self.next_id,
                      "config": dataclasses.asdict(self.cfg), "encoder": self.encoder}
            atomic_write_text(staged / INDEX_FILE, json.dumps(header, indent=2) + "\n")
            lines = [json.dumps({"id": key, **chunk.to_json()}, ensure_ascii=False) for key, chunk in sorted(self.chunks.items())]
            atomic_write_text(staged / CHUNKS_FILE, "".join(line + "\n" for line in lines))
            self.dense.save(staged)
            if self.lexical is not None:
                self.lexical.save(staged)
            write_manifest(staged)
            if target.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
                target.rename(old / target.name)
                staged.rename(target)
                shutil.rmtree(old)
            else:
                staged.rename(target)
        finally:
            shutil.rmtree(staged, ignore_errors=True)
        return target

    @classmethod
    def load(cls, folder: str | os.PathLike[str]) -> RagIndex:
        """Read an index saved by :meth:`save`, after checking its manifest and its chunks' hashes."""
        root = Path(folder)
        if not (root / INDEX_FILE).is_file():
            raise CheckpointError([f"not a rag index (no {INDEX_FILE}); build one with lmplanes rag index"], root)
        problems = verify_manifest(root)
        if problems:
            raise CheckpointError(problems, root)
        header = json.loads((root / INDEX_FILE).read_text(encoding="utf-8"))
        if header.get("format") != FORMAT or header.get("version") != VERSION:
            raise CheckpointError([f"{INDEX_FILE}: not a {FORMAT} version {VERSION}"], root)
        index = cls(header["dim"], IndexConfig(**header["config"]), encoder=header["encoder"])
        for number, line in enumerate((root / CHUNKS_FILE).read_text(encoding="utf-8").splitlines(), start=1):
            item = json.loads(line)
            chunk = Chunk.from_json({k: v for k, v in item.items() if k != "id"})
            if text_sha256(chunk.text) != chunk.sha256:
                problems.append(f"{CHUNKS_FILE} line {number}: the text does not match its sha256")
            index.chunks[item["id"]] = chunk
        if problems:
            raise CheckpointError(problems, root)
        index.next_id = header["next_id"]
        index.dense = _load_dense(index.cfg, index.dim, root)
        index.lexical = BM25Index.load(root) if index.cfg.bm25 else None
        return index


def _dense(cfg: IndexConfig, dim: int) -> ExactIndex | FaissIndex:
    if cfg.dense == "exact":
        return ExactIndex(dim)
    return FaissIndex(dim, cfg.dense, **_faiss_params(cfg))


def _load_dense(cfg: IndexConfig, dim: int, root: Path) -> ExactIndex | FaissIndex:
    if cfg.dense == "exact":
        return ExactIndex.load(root, dim)
    return FaissIndex.load(root, dim, cfg.dense, **_faiss_params(cfg))


def _faiss_params(cfg: IndexConfig) -> dict[str, Any]:
    return {"m": cfg.hnsw_m, "ef_construction": cfg.ef_construction, "ef_search": cfg.ef_search,
            "nlist": cfg.nlist, "nprobe": cfg.nprobe}

