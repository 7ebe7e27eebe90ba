"""``python -m eval``: the commands of ``lmplanes eval`` for an lmplanes checkpoint (``--checkpoint DIR``), loaded
through the model store installed under the ``lmplanes.model_stores`` entry point (GGUF files and int8
quantization are ``lmplanes eval``'s)."""

from __future__ import annotations

import argparse
import sys

import data
from eval.cli import add_commands
from specs.protocols import CausalLM

PROG = "python -m eval"


def _model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, metavar="DIR", help="an lmplanes checkpoint with its tokenizer.json")
    parser.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="cast the weights (default: as stored)")


def _load(args: argparse.Namespace) -> tuple[CausalLM, data.Tokenizer]:
    import torch

    from specs.protocols import installed_store

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = getattr(torch, args.dtype) if args.dtype else None
    lm = installed_store().load(args.checkpoint, device=device, dtype=dtype).eval()
    if not isinstance(lm, CausalLM):
        raise ValueError(f"{args.checkpoint}: not a causal language model")
    return lm, data.load_tokenizer(args.checkpoint)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["harness"]:  # lm_eval's command line, verbatim: its options are not ours to parse
        from eval.harness import run_lm_eval

        return run_lm_eval(argv[1:])
    parser = argparse.ArgumentParser(prog=PROG, description="Evaluate a language model: perplexity, "
                                     "lm-evaluation-harness, performance.")
    add_commands(parser.add_subparsers(dest="command", metavar="COMMAND", required=True), _model_arguments, _load)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, OSError, LookupError) as exc:  # a user's mistake: one line, no traceback
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
