"""The model a text command serves, named the same way everywhere: ``--checkpoint DIR`` or ``--gguf FILE``.

``generate``, ``chat`` and ``serve`` load it here into a :class:`serve.ServedModel`: the weights (on the chosen
device and dtype) behind a serial backend, the tokenizer, the chat template and the model's limits. A
checkpoint that ``lmplanes train`` wrote carries its ``tokenizer.json`` and serves as it is.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from pack.convert_cmd import DTYPES
from pack.errors import CommandError, UsageError

if TYPE_CHECKING:
    import torch

    import data
    import model
    import serve


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", metavar="DIR", help="an lmplanes checkpoint directory, with its tokenizer.json")
    source.add_argument("--gguf", metavar="FILE", help="a llama.cpp GGUF file (architecture llama): weights, tokenizer and chat template")
    parser.add_argument("--device", default="auto", help="where the model runs: cpu, cuda, cuda:N, or auto (cuda when "
                        "available; default)")
    parser.add_argument("--dtype", choices=DTYPES, help="cast the weights (default: as stored)")
    parser.add_argument("--quantize", choices=["int8", "int4"], help="int8: weight-only int8 linears (a scale per "
                        "output channel) computing in --dtype, default bfloat16: a quarter of the float32 weight bytes "
                        "a token; int4: 4-bit linears with a scale and offset per 32 input features (llama.cpp's "
                        "Q4_1 scheme: a Q4_1 GGUF keeps its own values), the output head int8, computing in bfloat16")


def add_compile_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--compile", action="store_true", help="compile the one-token decode step with torch.compile "
                        "(Inductor, the weights frozen into the graph: serve.compile_decoding(freeze=True)); the first "
                        "request at each cache size (prompt and answer, rounded up to a power of two) pays for the "
                        "compilation, tens of seconds on a CPU. One request at a time: not with --max-batch above 1")


@contextlib.contextmanager
def served_model(args: argparse.Namespace) -> Iterator[serve.ServedModel]:
    """:func:`load_served_model`, with its backend closed at the end of the block."""
    served = load_served_model(args)
    try:
        yield served
    finally:
        asyncio.run(served.backend.aclose())


def load_served_model(
    args: argparse.Namespace, *, name: str | None = None, max_batch: int = 1, max_len: int | None = None
) -> serve.ServedModel:
    """The model ``args`` names, ready to serve under ``name`` (default: its config's name, else the directory's):
    behind a serial backend, or with ``max_batch`` above 1 a continuous-batching engine of that many rows.
    ``max_len`` caps the tokens of one request (prompt and answer; default and most: the model's context)."""
    import torch

    import serve

    dtype = getattr(torch, args.dtype) if args.dtype else None
    device = _device(args.device)
    compile_step = getattr(args, "compile", False)
    if compile_step and max_batch > 1:  # before loading anything: the mistake is in the flags
        raise UsageError(f"--compile compiles the decode step of one request at a time; the continuous-batching "
                         f"engine (--max-batch {max_batch}) runs eagerly: add --max-batch 1 or leave out --compile")
    threads = serve.hand_threads_to_workers()  # the backend's worker computes; this thread only loads and serves
    load = _from_gguf if args.gguf else _from_checkpoint
    return load(Path(args.gguf or args.checkpoint), device, dtype, name, max_batch, threads, max_len, args.quantize,
                compile_step)


def served_device(args: argparse.Namespace) -> torch.device:
    """The device ``--device`` names (``auto``: cuda when available)."""
    return _device(args.device)


def _device(name: str) -> torch.device:
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"--device {name!r} is not a device (cpu, cuda, cuda:N or auto)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CommandError(f"--device {name}: CUDA is not available on this machine")
    return device


def load_language_model(args: argparse.Namespace) -> tuple[model.DecoderLM, data.Tokenizer]:
    """The model ``args`` names (in eval mode, on its device, cast or quantized as asked) and its tokenizer, with no
    backend around them: what ``lmplanes eval`` measures."""
    import torch

    dtype = getattr(torch, args.dtype) if args.dtype else None
    device = _device(args.device)
    if args.gguf:
        return _gguf_parts(Path(args.gguf), device, dtype, args.quantize)
    return _checkpoint_parts(Path(args.checkpoint), device, dtype, args.quantize)


def _checkpoint_parts(
    folder: Path, device: torch.device, dtype: torch.dtype | None, quantize: str | None
) -> tuple[model.DecoderLM, data.Tokenizer]:
    import data
    import model

    if not (folder / "config.json").is_file():
        hint = f"; a training run keeps its checkpoints in {folder / 'checkpoints'}" if (folder / "checkpoints").is_dir() else ""
        raise CommandError(f"{folder}: not a checkpoint directory (no config.json){hint}")
    try:
        tokenizer = data.load_tokenizer(folder)
    except data.DataError as exc:
        raise CommandError(f"{exc}; generating text needs the checkpoint's tokenizer beside its weights (lmplanes train "
                           "writes it)") from None
    lm = model.load_checkpoint(folder, device=device, dtype=None if quantize else dtype).eval()
    if not isinstance(lm, model.DecoderLM):
        raise CommandError(f"{folder}: the model is an {lm.config.architecture}; only a decoder generates text")
    return _quantized(lm, quantize, dtype), tokenizer


def _from_checkpoint(
    folder: Path, device: torch.device, dtype: torch.dtype | None, name: str | None, max_batch: int, threads: int,
    max_len: int | None, quantize: str | None, compile_step: bool,
) -> serve.ServedModel:
    import serve

    lm, tokenizer = _checkpoint_parts(folder, device, dtype, quantize)
    try:
        template = serve.ChatTemplate.from_directory(folder, bos_token=tokenizer.roles["bos"], eos_token=tokenizer.roles["eos"])
    except serve.ChatTemplateError as exc:
        raise CommandError(f"{folder}: {exc}") from None
    return _served(lm, tokenizer, template, device, name or lm.config.name or folder.resolve().name, folder, max_batch,
                   threads, max_len, compile_step)


def _gguf_parts(
    path: Path, device: torch.device, dtype: torch.dtype | None, quantize: str | None
) -> tuple[model.DecoderLM, data.Tokenizer]:
    import data
    import model
    import specs

    if not path.is_file():
        raise CommandError(f"--gguf {path}: no such file")
    try:
        tokenizer = data.load_tokenizer(path)
        lm = _quantized(model.from_gguf(path, device=device, dtype=None if quantize else dtype), quantize, dtype)
    except (data.DataError, specs.CheckpointError) as exc:
        raise CommandError(f"{path}: {exc}") from None
    return lm, tokenizer


def _from_gguf(
    path: Path, device: torch.device, dtype: torch.dtype | None, name: str | None, max_batch: int, threads: int,
    max_len: int | None, quantize: str | None, compile_step: bool,
) -> serve.ServedModel:
    """A GGUF file holds all three: the weights, the tokenizer and the chat template (``tokenizer.chat_template``)."""
    import serve

    lm, tokenizer = _gguf_parts(path, device, dtype, quantize)
    try:
        template = serve.ChatTemplate(tokenizer.chat_template, bos_token=tokenizer.roles["bos"], eos_token=tokenizer.roles["eos"])
    except serve.ChatTemplateError as exc:
        raise CommandError(f"{path}: {exc}") from None
    return _served(lm, tokenizer, template, device, name or lm.config.name or path.stem, path, max_batch, threads,
                   max_len, compile_step)


def _quantized(lm: model.DecoderLM, quantize: str | None, dtype: torch.dtype | None) -> model.DecoderLM:
    """``lm`` with int8 or int4 weights computing in ``dtype`` (default bfloat16) when asked; quantized from the
    weights as stored, not from a cast copy."""
    import torch

    import model

    if quantize is None:
        return lm
    if quantize == "int4":
        if dtype not in (None, torch.bfloat16):
            raise CommandError(f"--quantize int4 computes in bfloat16; --dtype {str(dtype).removeprefix('torch.')} cannot go with it")
        try:
            return model.quantize_int4(lm)  # type: ignore[return-value]
        except ValueError as exc:
            raise CommandError(f"--quantize int4: {exc}") from None
    return model.quantize_int8(lm, compute_dtype=dtype or torch.bfloat16)  # type: ignore[return-value]


def _served(lm: model.DecoderLM, tokenizer: data.Tokenizer, template: serve.ChatTemplate, device: torch.device,
            name: str, source: Path, max_batch: int, threads: int, max_len: int | None,
            compile_step: bool) -> serve.ServedModel:
    import serve

    config = lm.config
    if tokenizer.vocab_size > config.vocab_size:
        raise CommandError(f"{source}: the tokenizer has {tokenizer.vocab_size} tokens but the model only "
                           f"{config.vocab_size}; they do not belong together")
    context = min(max_len or config.max_seq_len, config.max_seq_len)
    backend: serve.Backend
    if max_batch > 1:  # the paged cache is allocated up front: max_batch rows of the context, in blocks
        backend = serve.AsyncEngine(serve.Engine(lm, max_batch=max_batch, max_len=context), threads=threads)
    else:
        decoder = serve.compile_decoding(lm, freeze=True) if compile_step else lm
        backend = serve.SerialBackend(decoder, device=device, threads=threads)
    return serve.ServedModel(
        name=name,
        backend=backend,
        tokenizer=tokenizer,
        chat_template=template,
        context_len=context,
        vocab_size=config.vocab_size,
    )
