"""llama.cpp GGUF import: :func:`from_gguf` reads a ``.gguf`` file's metadata and tensors with the ``gguf``
package, dequantizes them to float32 (``gguf.quants.dequantize``: F32, F16, BF16, Q4_0 ... Q8_0, the K-quants
and the IQ types the package implements) and builds our model.

The checks are those of every other import (:mod:`model.loading`): the model is built on the meta device from
the metadata, the file's tensor names, shapes and quantization types are compared with it, and every problem is
reported at once as a :class:`specs.CheckpointError` before a tensor is dequantized. The tokenizer the file
carries is read by the data plane: ``data.load_tokenizer("model.gguf")``.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import torch

from model.build import DTYPES, build
from model.decoder import DecoderLM
from model.gguf_llama import ARCHITECTURE, config_from_gguf, gguf_name, row_order_fix
from model.loading import StoredTensor, assign, compare
from specs.errors import CheckpointError

_DTYPE_NAMES = {dtype: name for name, dtype in DTYPES.items()}
_TOKENS = "tokenizer.ggml.tokens"
_EMBEDDING = "token_embd.weight"


def from_gguf(
    path: str | os.PathLike[str], *, device: torch.device | str = "cpu", dtype: torch.dtype | None = None
) -> DecoderLM:
    """Load a llama.cpp GGUF file (architecture ``llama``) as our model, in eval mode, with its weights
    dequantized (then cast to ``dtype``, float32 by default). ``config.name`` is the file's ``general.name``.
    Anything we cannot build -- another architecture, a missing key, an unsupported feature or quantization
    type, a tensor of the wrong shape -- is a :class:`specs.CheckpointError` naming every problem."""
    file = Path(path)
    dtype = dtype or torch.float32
    if dtype not in _DTYPE_NAMES:
        raise ValueError(f"dtype {dtype} is not supported; use one of {', '.join(DTYPES)}")
    reader = read_gguf(file)
    metadata = {key: field.contents() for key, field in reader.fields.items() if not key.startswith("tokenizer.")}
    architecture = metadata.get("general.architecture")
    if architecture != ARCHITECTURE:
        raise CheckpointError(
            f"general.architecture is {architecture!r}; supported GGUF architectures: {ARCHITECTURE}", file
        )
    tensors = {t.name: t for t in reader.tensors}
    stored = {name: StoredTensor(file.name, tuple(int(n) for n in reversed(t.shape))) for name, t in tensors.items()}
    try:
        cfg = config_from_gguf(
            metadata,
            set(tensors),
            vocab_size=_vocab_size(reader, stored),
            name=str(metadata.get("general.name") or file.stem),
            dtype=_DTYPE_NAMES[dtype],
        )
    except ValueError as exc:  # ConfigError included: the metadata asks for something we cannot build
        raise CheckpointError([line.strip() for line in str(exc).splitlines() if line.strip()], file) from None

    model = build(cfg, device="meta")
    assert isinstance(model, DecoderLM)  # config_from_gguf describes decoders only
    names = {ours: gguf_name(ours, cfg) for ours in model.state_dict(keep_vars=True)}
    inexpressible = sorted(ours for ours, name in names.items() if name is None)
    if inexpressible:  # an assembler/name-table mismatch, not a user error
        raise CheckpointError(f"llama.cpp has no name for our tensors: {', '.join(inexpressible)}", file)
    mapped = {ours: name for ours, name in names.items() if name is not None}
    problems = compare(model, stored, mapped, described_by=f"the GGUF metadata ({architecture})")
    problems += [
        f"{file.name}: tensor {name!r} is {tensors[name].tensor_type.name}, which the gguf package cannot "
        f"dequantize (supported here: {', '.join(sorted(_supported_types()))})"
        for name in sorted(set(mapped.values()) & set(tensors))
        if not _dequantizable(tensors[name].tensor_type)
    ]
    if problems:
        raise CheckpointError(problems, file)

    loaded: dict[str, torch.Tensor] = {}
    for name in dict.fromkeys(mapped.values()):
        tensor = _dequantize(tensors[name], stored[name].shape)
        fix = row_order_fix(name, cfg)
        if fix is not None:
            tensor = fix(tensor)
        loaded[name] = tensor.to(dtype=dtype, device=device)
    assign(model, {ours: loaded[name] for ours, name in mapped.items()}, file)
    return model.eval()


def read_gguf(file: Path) -> gguf.GGUFReader:
    """The file opened (memory-mapped) by ``gguf.GGUFReader``; a missing or malformed file is a
    :class:`CheckpointError`."""
    if not file.is_file():
        raise CheckpointError(f"{file}: no such GGUF file")
    try:
        return gguf.GGUFReader(file)
    except (ValueError, OSError, KeyError, IndexError) as exc:  # bad magic, truncation, unknown value types
        raise CheckpointError(f"not a readable GGUF file ({type(exc).__name__}: {exc})", file) from None


def _vocab_size(reader: gguf.GGUFReader, stored: dict[str, StoredTensor]) -> int:
    """The size of the token list (one ``data`` entry per token), else the rows of the token embedding."""
    if _TOKENS in reader.fields:
        return len(reader.fields[_TOKENS].data)
    embedding = stored.get(_EMBEDDING)
    return embedding.shape[0] if embedding is not None and embedding.shape else 0


def _dequantize(tensor: Any, shape: tuple[int, ...]) -> torch.Tensor:
    """float32, our shape (numpy order: the reverse of GGML's), writable and contiguous."""
    array = gguf.quants.dequantize(tensor.data, tensor.tensor_type).reshape(shape)
    return torch.from_numpy(np.require(array, dtype=np.float32, requirements=["C", "W"]))


@functools.cache
def _dequantizable(qtype: gguf.GGMLQuantizationType) -> bool:
    """Whether the installed ``gguf`` package dequantizes ``qtype`` (tried on one all-zero block)."""
    _, type_size = gguf.GGML_QUANT_SIZES[qtype]
    try:
        gguf.quants.dequantize(np.zeros((1, type_size), dtype=np.uint8), qtype)
    except (NotImplementedError, ValueError, TypeError):
        return False
    return True


def _supported_types() -> list[str]:
    return [qtype.name for qtype in gguf.GGMLQuantizationType if qtype in gguf.GGML_QUANT_SIZES and _dequantizable(qtype)]
