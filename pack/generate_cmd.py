"""``lmplanes generate``: continue a prompt, printing the text as it is generated."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TextIO

from pack.errors import CommandError, UsageError
from pack.model_source import add_compile_argument, add_model_arguments, served_model
from pack.sampling_args import add_sampling_arguments, generation_config

if TYPE_CHECKING:
    import serve
    import specs


def register(commands: Any) -> None:
    """Add ``generate`` to the ``lmplanes`` subparsers."""
    parser = commands.add_parser(
        "generate",
        help="continue a prompt with a model, printing the text as it comes",
        description="Continue --prompt with the model and print the continuation to stdout as it is generated (the "
        "prompt itself is not repeated); a summary line (tokens, speed, why it stopped) goes to stderr. Greedy "
        "unless --temperature is above 0.",
    )
    add_model_arguments(parser)
    add_compile_argument(parser)
    parser.add_argument("--prompt", required=True, help="the text to continue")
    add_sampling_arguments(parser, max_new_tokens=128)
    parser.set_defaults(run=run_generate, huge_pages=True)  # see pack.huge_pages


def run_generate(args: argparse.Namespace) -> int:
    import data

    if not args.prompt:
        raise UsageError("--prompt must not be empty")
    with served_model(args) as served:
        try:
            prompt_ids = served.encode(args.prompt)
        except data.DataError as exc:
            raise CommandError(f"--prompt: {exc}") from None
        cfg = generation_config(args, served, len(prompt_ids))
        start = time.perf_counter()
        _, last = print_answer(served, prompt_ids, cfg, args.stop)
        seconds = time.perf_counter() - start
    sys.stdout.write("\n")
    print(f"{last.tokens} tokens in {seconds:.2f} s ({last.tokens / seconds:.1f} tokens/s), stopped by "
          f"{'the length limit' if last.finish_reason == 'length' else 'end of text or a stop string'}", file=sys.stderr)
    return 0


def print_answer(served: serve.ServedModel, prompt_ids: Sequence[int], cfg: specs.GenerationConfig,
                 stop: Sequence[str], out: TextIO | None = None) -> tuple[str, serve.TextDelta]:
    """Generate one answer, writing its text to ``out`` (default stdout) as it comes; return the text and the last
    delta (its token count and finish reason)."""
    import serve

    stream = out or sys.stdout

    async def answer() -> tuple[str, serve.TextDelta]:
        pieces = []
        deltas = serve.generate_text(served.backend, served.tokenizer, prompt_ids, cfg, stop=stop)
        async with contextlib.aclosing(deltas):
            async for delta in deltas:
                stream.write(delta.text)
                stream.flush()
                pieces.append(delta.text)
        return "".join(pieces), delta

    return asyncio.run(answer())
