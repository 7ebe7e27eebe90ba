"""``lmplanes convert``: between lmplanes checkpoints and Hugging Face directories, both ways."""

from __future__ import annotations

import argparse
from typing import Any

DTYPES = ("float32", "bfloat16", "float16")


def register(commands: Any) -> None:
    """Add ``convert`` to the ``lmplanes`` subparsers."""
    convert = commands.add_parser(
        "convert",
        help="convert between an lmplanes checkpoint and a Hugging Face directory",
        description="Convert a Hugging Face model directory (config.json + safetensors) into an lmplanes "
        "checkpoint, or an lmplanes checkpoint into a directory that transformers loads. Supported Hugging Face "
        "families: Llama (LlamaForCausalLM), GPT-2 (GPT2LMHeadModel).",
    )
    source = convert.add_mutually_exclusive_group(required=True)
    source.add_argument("--hf", metavar="DIR", help="a Hugging Face model directory to read")
    source.add_argument("--checkpoint", metavar="DIR", help="an lmplanes checkpoint directory to read")
    convert.add_argument("--out", metavar="DIR", required=True, help="the directory to write")
    convert.add_argument(
        "--to", choices=("lmplanes", "hf"), help="what to write (default: the other format than the input)"
    )
    convert.add_argument("--dtype", choices=DTYPES, help="cast the weights (default: keep the input's dtype)")
    convert.add_argument(
        "--overwrite", action="store_true", help="replace --out if it is a checkpoint directory (never other files)"
    )
    convert.set_defaults(run=run_convert)


def run_convert(args: argparse.Namespace) -> int:
    import torch

    import model

    target = args.to or ("lmplanes" if args.hf else "hf")
    dtype = getattr(torch, args.dtype) if args.dtype else None
    if args.hf:
        lm = model.from_hf(args.hf, dtype=dtype)
        source = f"Hugging Face directory {args.hf}"
    else:
        lm = model.load_checkpoint(args.checkpoint, dtype=dtype)
        source = f"checkpoint {args.checkpoint}"
    if target == "hf":
        out = model.to_hf(lm, args.out, overwrite=args.overwrite)
    else:  # from Hugging Face, or a checkpoint re-saved (with --dtype, say)
        out = model.save_checkpoint(lm, args.out, overwrite=args.overwrite)
    print(f"wrote {out} ({target}) from {source}: {lm.config.name or lm.config.architecture}, "
          f"{model.count_parameters(lm.config):,} parameters")
    return 0
