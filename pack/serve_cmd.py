"""``lmplanes serve``: the OpenAI-compatible HTTP server (the serve plane's app on uvicorn)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from pack.encoder_source import load_embedder
from pack.errors import CommandError, UsageError
from pack.model_source import add_compile_argument, add_model_arguments, load_served_model, served_device

API_KEY_VARIABLE = "LMPLANES_API_KEY"


def register(commands: Any) -> None:
    """Add ``serve`` to the ``lmplanes`` subparsers."""
    parser = commands.add_parser(
        "serve",
        help="serve a model over an OpenAI-compatible HTTP API",
        description="Serve a model over HTTP with OpenAI's API: POST /v1/completions and /v1/chat/completions (both "
        "stream with stream: true), POST /v1/embeddings (with --embedding-model), GET /v1/models, /health and /metrics (Prometheus). Up to --max-batch requests "
        "decode together (continuous batching over a paged KV cache). SIGTERM or Ctrl-C stops taking requests, lets those in flight finish, then exits 0.",
    )
    add_model_arguments(parser)
    add_compile_argument(parser)
    parser.add_argument("--host", default="127.0.0.1", help="the address to listen on (default 127.0.0.1; 0.0.0.0 for "
                        "every interface)")
    parser.add_argument("--port", type=int, default=8000, help="the port (default 8000; 0 picks a free one)")
    parser.add_argument("--api-key", metavar="KEY", default=os.environ.get(API_KEY_VARIABLE),
                        help=f"require 'Authorization: Bearer KEY' on /v1 requests (default: ${API_KEY_VARIABLE}, which "
                        "keeps the key out of the process list; none when unset)")
    parser.add_argument("--model-name", metavar="NAME", help="the model's name in requests and /v1/models (default: the "
                        "config's name, else the checkpoint directory's)")
    parser.add_argument("--max-tokens", type=int, metavar="N", help="the most tokens one answer may ask for (default: "
                        "what the context leaves)")
    parser.add_argument("--max-batch", type=int, default=8, metavar="N",
                        help="how many requests decode together (continuous batching over a paged KV cache; default 8; "
                        "1 decodes one request at a time)")
    parser.add_argument("--max-len", type=int, metavar="N",
                        help="the most tokens one request may hold, prompt and answer (default: the model's context); "
                        "the batching engine's KV cache is allocated up front for --max-batch requests of this length")
    parser.add_argument("--embedding-model", metavar="DIR", help="also answer POST /v1/embeddings with this BERT "
                        "sentence-embedding folder (e.g. all-MiniLM-L6-v2's)")
    parser.add_argument("--embedding-model-name", metavar="NAME", help="the embedding model's name in requests "
                        "(default: its folder's name)")
    parser.add_argument("--shutdown-timeout", type=int, default=60, metavar="SECONDS",
                        help="how long a stop signal waits for requests in flight before cancelling them (default 60)")
    parser.set_defaults(run=run_serve, huge_pages=True)  # see pack.huge_pages


def run_serve(args: argparse.Namespace) -> int:
    import serve

    try:
        settings = serve.ServerSettings(host=args.host, port=args.port, api_key=args.api_key, max_tokens=args.max_tokens,
                                        shutdown_timeout=args.shutdown_timeout)
    except ValueError as exc:
        raise UsageError(str(exc), "lmplanes serve") from None
    if args.max_batch < 1:
        raise UsageError(f"--max-batch must be >= 1, got {args.max_batch}", "lmplanes serve")
    if args.max_len is not None and args.max_len < 2:
        raise UsageError(f"--max-len must be >= 2 (a prompt token and an answer token), got {args.max_len}",
                         "lmplanes serve")
    served = load_served_model(args, name=args.model_name, max_batch=args.max_batch, max_len=args.max_len)
    embedder = None
    if args.embedding_model:
        folder = Path(args.embedding_model)
        embedder = serve.ServedEmbedder(args.embedding_model_name or folder.resolve().name,
                                        load_embedder(folder, served_device(args)), threads=serve.hand_threads_to_workers())
    app = serve.create_app(served, settings, embedder=embedder)

    def ready(url: str) -> None:
        print(f"serving {served.name} at {url}/v1 (OpenAI API){', API key required' if settings.api_key else ''}",
              flush=True)

    try:
        serve.run_server(app, settings, ready=ready)
    except OSError as exc:  # the address is taken, or not this machine's
        raise CommandError(f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}") from None
    return 0
