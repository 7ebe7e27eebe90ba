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

    import serve


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", metavar="DIR", help="an lmplanes checkpoint directory, with its tokenizer.json")
    source.add_argument("--gguf", metavar="FILE", help="a llama.cpp GGUF file (not available in this version yet)")
    parser.add_argument("--device", default="auto", help="where the model runs: cpu, cuda, cuda:N, or auto (cuda when "
                        "available; default)")
    parser.add_argument("--dtype", choices=DTYPES, help="cast the weights (default: as stored)")


@contextlib.contextmanager
def served_model(args: argparse.Namespace) -> Iterator[serve.ServedModel]:
    """:func:`load_served_model`, with its backend closed at the end of the block."""
    served = load_served_model(args)
    try:
        yield served
    finally:
        asyncio.run(served.backend.aclose())


def load_served_model(args: argparse.Namespace, *, name: str | None = None) -> serve.ServedModel:
    """The model ``args`` names, ready to serve under ``name`` (default: its config's name, else the directory's)."""
    import torch

    if args.gguf:
        return _from_gguf(Path(args.gguf))
    dtype = getattr(torch, args.dtype) if args.dtype else None
    return _from_checkpoint(Path(args.checkpoint), _device(args.device), dtype, name)


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


def _from_checkpoint(folder: Path, device: torch.device, dtype: torch.dtype | None, name: str | None) -> serve.ServedModel:
    import data
    import model
    import serve

    if not (folder / "config.json").is_file():
        hint = f"; a training run keeps its checkpoints in {folder / 'checkpoints'}" if (folder / "checkpoints").is_dir() else ""
        raise CommandError(f"{folder}: not a checkpoint directory (no config.json){hint}")
    try:
        tokenizer = data.load_tokenizer(folder)
    except data.DataError as exc:
        raise CommandError(f"{exc}; generating text needs the checkpoint's tokenizer beside its weights (lmplanes train "
                           "writes it)") from None
    try:
        template = serve.ChatTemplate.from_directory(folder, bos_token=tokenizer.roles["bos"], eos_token=tokenizer.roles["eos"])
    except serve.ChatTemplateError as exc:
        raise CommandError(f"{folder}: {exc}") from None
    lm = model.load_checkpoint(folder, device=device, dtype=dtype).eval()
    if tokenizer.vocab_size > lm.config.vocab_size:
        raise CommandError(f"{folder}: the tokenizer has {tokenizer.vocab_size} tokens but the model only "
                           f"{lm.config.vocab_size}; they do not belong together")
    return serve.ServedModel(
        name=name or lm.config.name or folder.resolve().name,
        backend=serve.SerialBackend(lm, device=device),
        tokenizer=tokenizer,
        chat_template=template,
        context_len=lm.config.max_seq_len,
        vocab_size=lm.config.vocab_size,
    )


def _from_gguf(path: Path) -> serve.ServedModel:
    # The GGUF import (model.from_gguf, data.load_tokenizer on a .gguf, the template in its metadata) is not part
    # of this build yet; when it lands, this builds the ServedModel from those three as _from_checkpoint does.
    raise CommandError(f"--gguf {path}: serving GGUF files is not available yet in this version of lmplanes; "
                       "use --checkpoint DIR")
