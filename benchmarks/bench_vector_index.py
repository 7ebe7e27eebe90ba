"""Vector index build time and query latency: exact (``rag.ExactIndex``, torch) vs HNSW (``rag.FaissIndex``),
on synthetic unit vectors, with HNSW's recall@10 against exact.

    python benchmarks/bench_vector_index.py [--sizes 10000 100000] [--dim 384] [--queries 200] [--k 10] [--threads N]

Vectors are Gaussian, normalised (the shape of sentence embeddings, though without their clustering, which is
the hard case for a graph index). Queries are timed one at a time (a retrieval request embeds one question);
the table gives p50 and p99 over --queries queries after 10 warm-up queries. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from bench_spine import cpu_name

import rag


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure(index: rag.VectorIndex, vectors: torch.Tensor, queries: torch.Tensor,
            k: int) -> tuple[float, float, float, list[torch.Tensor]]:
    """Build seconds, query p50 and p99 seconds, and each query's ids."""
    start = time.perf_counter()
    index.add(range(len(vectors)), vectors)
    build = time.perf_counter() - start
    for q in queries[:10]:
        index.search(q[None], k)
    latencies: list[float] = []
    found: list[torch.Tensor] = []
    for q in queries:
        start = time.perf_counter()
        _, ids = index.search(q[None], k)
        latencies.append(time.perf_counter() - start)
        found.append(ids[0])
    return build, statistics.median(latencies), percentile(latencies, 0.99), found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--threads", type=int, help="intra-op threads of torch and FAISS (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        import faiss

        torch.set_num_threads(args.threads)
        faiss.omp_set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    print(f"{cpu_name()}, {torch.get_num_threads()} torch threads; dim {args.dim}, k {args.k}, {args.queries} queries\n")
    print("| vectors | index | build (s) | query p50 (ms) | query p99 (ms) | recall@k vs exact |")
    print("| ---: | --- | ---: | ---: | ---: | ---: |")
    for n in args.sizes:
        vectors = F.normalize(torch.randn(n, args.dim, generator=generator), dim=-1)
        queries = F.normalize(torch.randn(args.queries, args.dim, generator=generator), dim=-1)
        exact = measure(rag.ExactIndex(args.dim), vectors, queries, args.k)
        hnsw = measure(rag.FaissIndex(args.dim, "hnsw"), vectors, queries, args.k)
        for name, (build, p50, p99, got) in (("exact (torch)", exact), ("HNSW (faiss, M=32, efC=200, efS=128)", hnsw)):
            truth = exact[3]
            recall = sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(got, truth)) / (len(truth) * args.k)
            print(f"| {n:,} | {name} | {build:.2f} | {1e3 * p50:.3f} | {1e3 * p99:.3f} | {recall:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
