"""Embedding throughput: our encoder behind ``rag.Embedder`` vs sentence-transformers, same model, same texts,
same run (all-MiniLM-L6-v2, fp32, CPU unless --device says otherwise).

    python benchmarks/bench_embeddings.py [--texts 512] [--batch-size 32] [--repeats 5] [--model DIR]

The texts are the sentences and paragraphs of the shipped rag corpus (benchmarks/rag_corpus), repeated up to
--texts. Each repeat embeds all of them; the two contenders alternate, and the table gives sentences per second
from the median repeat, with the largest difference between the two embeddings as a check. Not part of the test
suite.
"""

from __future__ import annotations

import argparse
import os
import platform
from pathlib import Path

import torch
from bench_spine import cpu_name, interleaved_medians
from rag_common import embedder, minilm_dir

import rag

CORPUS = Path(__file__).resolve().parent / "rag_corpus" / "docs"


def texts(n: int) -> list[str]:
    documents = rag.read_folder(CORPUS)
    pieces = [c.text for source, document in documents.items() for c in rag.chunk_text(document, source, unit="sentence", max_chars=600)]
    pieces += [c.text for source, document in documents.items() for c in rag.chunk_text(document, source, unit="paragraph", max_chars=600)]
    return [pieces[i % len(pieces)] for i in range(n)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", help="the all-MiniLM-L6-v2 folder (default: unpacked from the test wheel)")
    args = parser.parse_args(argv)
    os.environ["HF_HUB_OFFLINE"] = "1"
    from sentence_transformers import SentenceTransformer

    folder = minilm_dir(args.model)
    sentences = texts(args.texts)
    ours = embedder(folder, args.batch_size)
    ours.encoder.to(args.device)  # type: ignore[attr-defined]
    theirs = SentenceTransformer(str(folder), device=args.device, local_files_only=True)
    difference = (ours.embed(sentences) - theirs.encode(sentences, batch_size=args.batch_size, convert_to_tensor=True)
                  .cpu()).abs().max().item()
    medians = interleaved_medians({
        "lmplanes": lambda: ours.embed(sentences),
        "sentence-transformers": lambda: theirs.encode(sentences, batch_size=args.batch_size, convert_to_tensor=True),
    }, args.repeats, warmup=1)
    rate = {name: len(sentences) / seconds for name, seconds in medians.items()}
    machine = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"{cpu_name()}, {torch.get_num_threads()} threads"
    print(f"{len(sentences)} texts, batch {args.batch_size}, {machine}, torch {torch.__version__}, "
          f"python {platform.python_version()}; max |ours - sentence-transformers| = {difference:.1e}\n")
    print("| embedder | sentences/s | vs sentence-transformers |\n| --- | ---: | ---: |")
    for name, value in rate.items():
        print(f"| {name} | {value:.1f} | {value / rate['sentence-transformers']:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
