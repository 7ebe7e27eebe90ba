"""``lmplanes convert``: between lmplanes checkpoints and Hugging Face directories, both ways, and from llama.cpp
GGUF files (the weights dequantized, the tokenizer rebuilt from the file's metadata and written beside them)."""

from __future__ import annotations

import argparse
from typing import Any

from pack.errors import CommandError

DTYPES = ("float32", "bfloat16", "float16")


def register(commands: Any) -> None:
    """Add ``convert`` to the ``lmplanes`` subparsers."""
    convert = commands.add_parser(
        "convert",
        help="convert between an lmplanes checkpoint, a Hugging Face directory and a GGUF file",
        description="Convert a Hugging Face model directory (config.json + safetensors) into an lmplanes "
        "checkpoint, or an lmplanes checkpoint into a directory that transformers loads. Supported Hugging Face "
        "families: Llama, Qwen 2/3, Gemma 2/3, GPT-2 (decoders) and BERT (encoders). A llama.cpp GGUF file "
        "(architecture llama; its weights dequantized to float32 unless --dtype says otherwise) converts to either, "
        "with its tokenizer written beside the weights as tokenizer.json.",
    )
    source = convert.add_mutually_exclusive_group(required=True)
    source.add_argument("--hf", metavar="DIR", help="a Hugging Face model directory to read")
    source.add_argument("--checkpoint", metavar="DIR", help="an lmplanes checkpoint directory to read")
    source.add_argument("--gguf", metavar="FILE", help="a llama.cpp GGUF file to read")
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

    target = args.to or ("hf" if args.checkpoint else "lmplanes")
    dtype = getattr(torch, args.dtype) if args.dtype else None
    tokenizer = None
    if args.hf:
        lm = model.from_hf(args.hf, dtype=dtype)
        source = f"Hugging Face directory {args.hf}"
    elif args.gguf:
        tokenizer = _gguf_tokenizer(args.gguf)  # before anything is written
        lm = model.from_gguf(args.gguf, dtype=dtype)
        source = f"GGUF file {args.gguf}"
    else:
        lm = model.load_checkpoint(args.checkpoint, dtype=dtype)
        source = f"checkpoint {args.checkpoint}"
    if target == "hf":
        out = model.to_hf(lm, args.out, overwrite=args.overwrite)
        if tokenizer is not None:
            tokenizer.save(out)
    elif tokenizer is not None:  # the tokenizer is part of the checkpoint: listed in its manifest and card
        out = model.save_checkpoint(
            lm, args.out, overwrite=args.overwrite, card_fields={"tokenizer": "tokenizer.json"}, extra=tokenizer.save
        )
    else:  # from Hugging Face, or a checkpoint re-saved (with --dtype, say)
        out = model.save_checkpoint(lm, args.out, overwrite=args.overwrite)
    print(f"wrote {out} ({target}) from {source}: {lm.config.name or lm.config.architecture}, "
          f"{model.count_parameters(lm.config):,} parameters")
    return 0


def _gguf_tokenizer(path: str) -> Any:
    import data

    try:
        return data.load_tokenizer(path)
    except data.DataError as exc:
        raise CommandError(f"cannot rebuild the tokenizer of {path}: {exc}") from None
