"""``lmplanes export onnx|pt2|int8|hf|modelpack|unpack``: build the model from a checkpoint and hand it to the
``export`` plane (which never imports ``model``); ``hf`` is ``model.to_hf``.

Each export directory gets the checkpoint's tokenizer files, ``config.json``, a ModelCard naming the checkpoint
as its parent (its MANIFEST content id) and a ``MANIFEST.json``, so ``governance`` can release it.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

from pack.errors import CommandError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
COMPUTE_DTYPES = ("bfloat16", "float16", "float32")


def register(commands: Any) -> None:
    """Add ``export`` and its formats to the ``lmplanes`` subparsers."""
    parser = commands.add_parser(
        "export",
        help="export a checkpoint: ONNX, torch.export, int8, Hugging Face, ModelPack",
        description="Export an lmplanes checkpoint. Every format but hf and modelpack writes a directory with a "
        "ModelCard (the sha256 of each file written) and MANIFEST.json beside the exported files.",
    )
    formats = parser.add_subparsers(dest="format", metavar="FORMAT", required=True)

    def add(name: str, help_text: str, run: Any, overwrite: bool = True) -> argparse.ArgumentParser:
        sub = formats.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("--checkpoint", metavar="DIR", required=True, help="the lmplanes checkpoint to export")
        sub.add_argument("--out", metavar="DIR", required=True, help="the directory to write (missing or empty)")
        if overwrite:
            sub.add_argument("--overwrite", action="store_true", help="replace --out if it holds an export of ours")
        sub.set_defaults(run=run)
        return sub

    onnx = add("onnx", "model.onnx in float32: prefill and KV-cached decoding in one graph (dynamic batch, sequence "
               "and past lengths), checked with onnx.checker and against PyTorch in onnxruntime", run_onnx)
    onnx.add_argument("--opset", type=int, help="ONNX opset (default: the exporter's)")
    add("pt2", "model.pt2 (logits) and decode.pt2 (KV-cached step): torch.export programs, reloaded and checked",
        run_pt2)
    int8 = add("int8", "weight-only int8 checkpoint for CPU serving (lmplanes generate --checkpoint OUT), with size, "
               "held-out perplexity and decode speed against the float model in its card", run_int8)
    int8.add_argument("--keep-float", action="store_true", help="leave layers int8 cannot take (MoE experts, "
                      "convolutions) in the compute dtype instead of refusing")
    int8.add_argument("--compute-dtype", choices=COMPUTE_DTYPES, default="bfloat16", help="activations and "
                      "non-linear weights (default bfloat16)")
    int8.add_argument("--eval-text", metavar="FILE", help="held-out text for the perplexity (default: the last 10%% "
                      "of the bundled tinyshakespeare)")
    int8.add_argument("--eval-tokens", type=int, default=4096, help="tokens of it to score (default 4096)")
    add("hf", "a Hugging Face directory that transformers loads (model.to_hf)", run_hf)
    add("modelpack", "a ModelPack: the checkpoint's files as CIDv1-named blobs plus modelpack.json", run_modelpack,
        overwrite=False)
    unpack = formats.add_parser("unpack", help="verify and unpack a ModelPack (a directory or an http(s) URL)",
                                description="Fetch (through the local cache, resuming cut downloads), verify and "
                                "write a ModelPack's files to --out.")
    unpack.add_argument("source", metavar="SOURCE", help="a ModelPack directory or its http(s):// base URL")
    unpack.add_argument("--out", metavar="DIR", required=True, help="the directory to write (missing or empty)")
    unpack.add_argument("--cache", metavar="DIR", help="download cache (default $LMPLANES_MODELPACK_CACHE or "
                        "~/.cache/lmplanes/modelpack)")
    unpack.set_defaults(run=run_unpack)


def _card(checkpoint: Path) -> Any:
    """Card fields every export of ``checkpoint`` shares: its content id as parent, its tokenizer files."""
    import export
    import specs

    tokenizer = [name for name in TOKENIZER_FILES if (checkpoint / name).is_file()]

    def copy_tokenizer(directory: Path) -> None:
        for name in tokenizer:
            shutil.copyfile(checkpoint / name, directory / name)

    return export.CardFields(
        parents=(specs.read_manifest(checkpoint)["content_id"],),
        tokenizer="tokenizer.json" if tokenizer else None, extra=copy_tokenizer if tokenizer else None,
    )


def _load(args: argparse.Namespace, *, float32: bool = False) -> Any:
    import torch

    import model

    return model.load_checkpoint(args.checkpoint, dtype=torch.float32 if float32 else None)


def _export_error(exc: Exception) -> CommandError:
    return CommandError(f"export failed: {exc}")


def run_onnx(args: argparse.Namespace) -> int:
    import export

    lm = _load(args, float32=True)  # onnxruntime's CPU kernels have no bfloat16 matmul; the 1e-4 check is fp32's
    try:
        out = export.export_onnx(lm, args.out, card=_card(Path(args.checkpoint)), overwrite=args.overwrite,
                                 opset=args.opset)
    except ModuleNotFoundError as exc:  # onnx, onnxruntime or onnxscript: the export extra
        raise CommandError(f"export onnx needs {exc.name}: pip install 'lmplanes[export]'") from None
    except (TypeError, ValueError, RuntimeError, FileExistsError) as exc:
        raise _export_error(exc) from None
    print(f"wrote {out / 'model.onnx'} (checked in onnxruntime against PyTorch)")
    return 0


def run_pt2(args: argparse.Namespace) -> int:
    import export

    lm = _load(args)
    try:
        out = export.export_pt2(lm, args.out, card=_card(Path(args.checkpoint)), overwrite=args.overwrite)
    except (TypeError, ValueError, RuntimeError, FileExistsError) as exc:
        raise _export_error(exc) from None
    print(f"wrote {out / 'model.pt2'} and {out / 'decode.pt2'} (reloaded and checked against PyTorch)")
    return 0


def run_int8(args: argparse.Namespace) -> int:
    import torch

    import export
    import model

    lm = _load(args)
    ids = torch.tensor(_eval_ids(args, lm.config.vocab_size), dtype=torch.long)
    try:
        out, report = export.export_int8(
            lm, args.out, quantize=model.quantize_int8, eval_ids=ids, keep_float=args.keep_float,
            card=_card(Path(args.checkpoint)), overwrite=args.overwrite,
            compute_dtype=getattr(torch, args.compute_dtype),
        )
    except (TypeError, ValueError, RuntimeError, FileExistsError) as exc:
        raise _export_error(exc) from None
    for name, why in report.kept.items():
        print(f"kept in {args.compute_dtype}: {name}: {why}")
    print(f"wrote {out}: weights {report.float_bytes / 1e6:.2f} MB -> {report.int8_bytes / 1e6:.2f} MB "
          f"({report.int8_bytes / report.float_bytes:.0%}); perplexity on {ids.numel()} held-out tokens "
          f"{report.ppl_float:.4f} -> {report.ppl_int8:.4f} ({(report.ppl_int8 or 0) - (report.ppl_float or 0):+.4f}); "
          f"greedy decode {report.tokens_per_s_float:.1f} -> {report.tokens_per_s_int8:.1f} tokens/s (batch 1)")
    return 0


def _eval_ids(args: argparse.Namespace, vocab_size: int) -> list[int]:
    """Held-out tokens: ``--eval-text`` (or the last 10% of tinyshakespeare), tokenized by the checkpoint's
    tokenizer, or as bytes when it has none and its vocabulary covers them."""
    import data

    if args.eval_tokens < 2:
        raise CommandError(f"--eval-tokens must be at least 2, got {args.eval_tokens}")
    if args.eval_text:
        text = Path(args.eval_text).read_text(encoding="utf-8")
    else:
        corpus = data.TINYSHAKESPEARE.read_text(encoding="utf-8")
        text = corpus[int(0.9 * len(corpus)) :]
    checkpoint = Path(args.checkpoint)
    if (checkpoint / "tokenizer.json").is_file():
        ids = data.load_tokenizer(checkpoint).encode(text)
    elif vocab_size >= 256:
        ids = list(text.encode("utf-8"))
    else:
        raise CommandError(f"{checkpoint} has no tokenizer.json and a vocabulary of {vocab_size} (< 256 bytes): "
                           "cannot tokenize the held-out text")
    if len(ids) < 2:
        raise CommandError("the held-out text has fewer than 2 tokens")
    return ids[: args.eval_tokens]


def run_hf(args: argparse.Namespace) -> int:
    import model

    out = model.to_hf(_load(args), args.out, overwrite=args.overwrite)
    print(f"wrote {out} (Hugging Face format)")
    return 0


def run_modelpack(args: argparse.Namespace) -> int:
    import export
    import model

    problems = model.verify_checkpoint(args.checkpoint)  # never distribute a damaged checkpoint under new ids
    if problems:
        raise CommandError(f"{args.checkpoint}: not packed, the checkpoint has problems: {'; '.join(problems)}")
    try:
        files = export.pack(args.checkpoint, args.out)
    except (export.ModelPackError, FileExistsError) as exc:
        raise CommandError(str(exc)) from None
    print(f"wrote {args.out}: {len(files)} files, {sum(f.size for f in files) / 1e6:.2f} MB")
    return 0


def run_unpack(args: argparse.Namespace) -> int:
    import export

    try:
        out = export.unpack(args.source, args.out, cache_dir=args.cache)
    except (export.ModelPackError, FileExistsError) as exc:
        raise CommandError(str(exc)) from None
    print(f"wrote {out} from {args.source} (every file's sha256 verified)")
    return 0
