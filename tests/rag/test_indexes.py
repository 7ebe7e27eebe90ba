"""Dense indexes (ours in torch and FAISS's), BM25, rank fusion, and the chunk store saved and reloaded.

Oracles: FAISS's own ``IndexFlatIP`` for exact search (identical ids, scores to float32 rounding), a brute-force
BM25 written out per document, and a fresh index built without the deleted ids for removal."""

from __future__ import annotations

import json
import math
from collections import Counter

import faiss
import pytest
import torch
import torch.nn.functional as F

import rag
import specs
from specs import CheckpointError

DIM = 48


def unit_vectors(n: int, seed: int) -> torch.Tensor:
    return F.normalize(torch.randn(n, DIM, generator=torch.Generator().manual_seed(seed)), dim=-1)


@pytest.fixture(scope="module")
def corpus() -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    return unit_vectors(3000, 0), unit_vectors(40, 1), list(range(1000, 4000))


def make(kind: str, **params) -> rag.VectorIndex:
    return rag.ExactIndex(DIM) if kind == "exact" else rag.FaissIndex(DIM, kind, **params)


def test_ours_and_faiss_flat_return_identical_top_k(corpus) -> None:
    vectors, queries, ids = corpus
    reference = faiss.IndexFlatIP(DIM)
    reference.add(vectors.numpy())
    expected_scores, rows = reference.search(queries.numpy(), 10)
    expected_ids = torch.tensor(ids)[torch.from_numpy(rows)]
    for kind in ("exact", "flat"):
        index = make(kind)
        index.add(ids, vectors)
        scores, found = index.search(queries, 10)
        assert torch.equal(found, expected_ids), kind
        torch.testing.assert_close(scores, torch.from_numpy(expected_scores), atol=1e-6, rtol=0)  # float32 dot products
    short_scores, short = rag.ExactIndex(DIM).search(queries, 3)  # an empty index pads
    assert (short == -1).all() and torch.isinf(short_scores).all()


def recall_at_10(found: torch.Tensor, exact: torch.Tensor) -> float:
    return sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(found, exact)) / exact.numel()


def test_approximate_indexes_recall_against_exact(corpus) -> None:
    vectors, queries, ids = corpus
    exact = make("exact")
    exact.add(ids, vectors)
    _, truth = exact.search(queries, 10)
    hnsw = make("hnsw")
    hnsw.add(ids, vectors)
    ivf = make("ivf", nprobe=4)
    ivf.add(ids, vectors)
    recalls = {"hnsw": recall_at_10(hnsw.search(queries, 10)[1], truth),
                "ivf nprobe=4": recall_at_10(ivf.search(queries, 10)[1], truth)}
    everything = make("ivf", nprobe=10_000)  # scanning every list is exact
    everything.add(ids, vectors)
    recalls["ivf all lists"] = recall_at_10(everything.search(queries, 10)[1], truth)
    print(f"recall@10 against exact on {len(ids)} random {DIM}-d vectors: {recalls}")
    assert ivf.nlist == round(math.sqrt(3000)) and recalls["ivf all lists"] == 1.0
    assert recalls["hnsw"] >= 0.95 and recalls["ivf nprobe=4"] < 1.0


@pytest.mark.parametrize("kind", ["exact", "flat", "hnsw", "ivf"])
def test_removal_equals_an_index_built_without_those_ids(corpus, kind: str) -> None:
    vectors, queries, ids = corpus
    gone = set(ids[::3])
    index = make(kind, nlist=20, nprobe=20)
    index.add(ids, vectors)
    index.remove(sorted(gone))
    kept = [i for i, key in enumerate(ids) if key not in gone]
    fresh = make("exact")
    fresh.add([ids[i] for i in kept], vectors[kept])
    assert len(index) == len(kept)
    found = index.search(queries, 5)[1]
    assert not set(found.flatten().tolist()) & gone
    assert recall_at_10(found, fresh.search(queries, 5)[1]) >= (1.0 if kind != "hnsw" else 0.95)


def test_bm25_equals_the_formula_written_out() -> None:
    texts = ["the cat sat on the mat", "dogs and cats", "The CAT, the cat!", "nothing relevant here", "mat mat mat"]
    index = rag.BM25Index()
    index.add([10, 11, 12, 13, 14], texts)
    docs = {10 + i: Counter(t.lower().replace(",", " ").replace("!", " ").split()) for i, t in enumerate(texts)}
    average = sum(sum(c.values()) for c in docs.values()) / len(docs)

    def score(query: list[str], doc: Counter) -> float:
        total = 0.0
        for term in query:
            df = sum(term in d for d in docs.values())
            idf = math.log(1 + (len(docs) - df + 0.5) / (df + 0.5))
            tf = doc[term]
            total += idf * tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * sum(doc.values()) / average))
        return total

    query = ["cat", "mat"]
    expected = sorted(((k, score(query, d)) for k, d in docs.items() if score(query, d) > 0), key=lambda x: (-x[1], x[0]))
    found = index.search("Cat mat", 10)
    assert [k for k, _ in found] == [k for k, _ in expected]
    assert all(math.isclose(a, b, rel_tol=1e-12) for (_, a), (_, b) in zip(found, expected))
    index.remove([12])
    assert 12 not in dict(index.search("cat", 10)) and len(index) == 4


def test_reciprocal_rank_fusion() -> None:
    fused = rag.reciprocal_rank_fusion([[1, 2, 3], [3, 1, 4]], k=60)
    assert [key for key, _ in fused] == [1, 3, 2, 4]
    assert math.isclose(fused[0][1], 1 / 61 + 1 / 62)


def chunks_for(source: str, n: int) -> list[rag.Chunk]:
    text = " ".join(f"{source} sentence number {i} about topic{i % 7}." for i in range(n))
    return rag.chunk_text(text, source, unit="sentence", max_chars=40)


@pytest.mark.parametrize("dense", ["exact", "flat", "hnsw", "ivf"])
def test_a_reloaded_index_finds_exactly_the_same(tmp_path, dense: str) -> None:
    chunks = chunks_for("a.md", 60) + chunks_for("b.txt", 40)
    vectors = unit_vectors(len(chunks), 2)
    index = rag.RagIndex(DIM, rag.IndexConfig(dense=dense, nprobe=2), encoder={"name": "test"})
    index.add(chunks, vectors)
    assert index.delete_document("b.txt") == 40 and index.sources() == ["a.md"]
    queries = unit_vectors(8, 3)
    before = [index.search("topic3 number", q, 5, mode) for q in queries for mode in ("dense", "lexical", "hybrid")]
    assert all(hit.chunk.source == "a.md" for hits in before for hit in hits)
    index.save(tmp_path / "idx")
    again = rag.RagIndex.load(tmp_path / "idx")
    after = [again.search("topic3 number", q, 5, mode) for q in queries for mode in ("dense", "lexical", "hybrid")]
    assert after == before and again.encoder == {"name": "test"} and again.cfg == index.cfg
    more = chunks_for("c.md", 5)  # ids keep counting after a reload
    assert again.add(more, unit_vectors(len(more), 4))[0] == index.next_id


def test_saving_refuses_strangers_and_loading_names_changed_files(tmp_path) -> None:
    index = rag.RagIndex(DIM)
    chunks = chunks_for("a.md", 10)
    index.add(chunks, unit_vectors(len(chunks), 5))
    with pytest.raises(FileExistsError, match="not a rag index"):
        index.save(tmp_path, overwrite=True)
    target = index.save(tmp_path / "idx")
    with pytest.raises(FileExistsError, match="already exists"):
        index.save(target)
    index.save(target, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]  # nothing staged is left behind
    lines = (target / "chunks.jsonl").read_text().splitlines()
    (target / "chunks.jsonl").write_text("\n".join([json.dumps({**json.loads(lines[0]), "text": "changed"}), *lines[1:]]))
    with pytest.raises(CheckpointError, match="chunks.jsonl: size"):
        rag.RagIndex.load(target)
    specs.write_manifest(target)  # a manifest rewritten over the change: the chunk's own hash still tells
    with pytest.raises(CheckpointError, match="chunks.jsonl line 1: the text does not match its sha256"):
        rag.RagIndex.load(target)
    with pytest.raises(CheckpointError, match="not a rag index"):
        rag.RagIndex.load(tmp_path / "missing")
