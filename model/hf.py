"""Hugging Face interop: :func:`from_hf` imports a ``transformers`` checkpoint directory, :func:`to_hf` writes
one that ``transformers`` loads (``AutoModelForCausalLM`` for decoders, ``AutoModel``/``AutoModelForMaskedLM``
for encoders, ``AutoModelForSeq2SeqLM`` for encoder-decoders).

``transformers`` is never imported: ``config.json`` is read as JSON and weights as safetensors (pickled
``pytorch_model.bin`` files are refused). Each supported family, keyed by ``config.json``'s ``model_type``
(:data:`HF_FAMILIES`), supplies the config mapping and plain name tables
(``config_from_hf``, ``hf_config``, ``export_problems``, ``hf_name``, ``ignored``); a tensor stored in another
layout (GPT-2's transposed ``Conv1D`` weights and fused q/k/v) is named with a :class:`model.loading.Packed`
entry, which unpacks on import and packs on export, and a tensor of ours stored as one tensor per slice (a
MoE's experts) with a :class:`model.loading.Stacked` entry. The loading, checking and writing here are shared by all
families.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Protocol

import torch
from safetensors.torch import save_file
from torch import nn

from model.atomic import atomic_directory
from model.build import DTYPES, LanguageModel, build
from model.hf_bart import BartFamily
from model.hf_bert import BertFamily
from model.hf_gemma import Gemma2Family, Gemma3TextFamily
from model.hf_gpt2 import GPT2Family
from model.hf_llama import LlamaFamily
from model.hf_mixtral import MixtralFamily
from model.hf_qwen import Qwen2Family, Qwen3Family
from model.hf_qwen_moe import Qwen2MoeFamily
from model.loading import Packed, Stacked, Where, load_weights, stored_tensors
from model.target_rules import HUGGING_FACE
from model.weight_files import INDEX_NAME, WEIGHTS_NAME, safetensors_os_errors
from specs.errors import CheckpointError
from specs.model_config import ModelConfig


class HFFamily(Protocol):
    """What a supported Hugging Face family supplies: the config mapping both ways and plain name tables."""

    model_type: str  # config.json's model_type
    architecture: str  # config.json's architectures[0] (the family's main one, when it imports several)
    # What the LM's names add to the base model's ("model.", "transformer."); "" when the family maps both
    # itself (BERT).
    base_prefix: str

    def config_from_hf(self, hf: dict[str, Any], *, name: str, dtype: str) -> ModelConfig: ...

    def hf_config(self, cfg: ModelConfig, *, dtype: str) -> dict[str, Any]: ...

    def export_problems(self, cfg: ModelConfig) -> list[str]:
        """Why this family cannot express ``cfg`` (empty when it can)."""
        ...

    def hf_name(self, name: str, cfg: ModelConfig) -> Where | None:
        """Where our tensor ``name`` is stored: a Hugging Face name, a :class:`Packed` entry when the stored
        layout differs (transposed, several of ours in one tensor), or None when the family has none. Several
        of our names may share a stored name: tied (equal) tensors, or the parts of a packed one."""
        ...

    def ignored(self, hf_name: str, cfg: ModelConfig) -> bool:
        """Stored tensors the family knows and skips (e.g. derived RoPE buffers)."""
        ...


# to_hf writes a model as the first family that can express it.
HF_FAMILIES: dict[str, HFFamily] = {
    "llama": LlamaFamily(),
    "qwen2": Qwen2Family(),
    "qwen3": Qwen3Family(),
    "gemma2": Gemma2Family(),
    "gemma3_text": Gemma3TextFamily(),
    "gpt2": GPT2Family(),
    "bert": BertFamily(),
    "bart": BartFamily(),
    "mixtral": MixtralFamily(),
    "qwen2_moe": Qwen2MoeFamily(),
}

_CONFIG = "config.json"
_PICKLED = ("pytorch_model.bin", "pytorch_model.bin.index.json")
_DTYPE_NAMES = {dtype: name for name, dtype in DTYPES.items()}


def from_hf(
    path: str | os.PathLike[str], *, device: torch.device | str = "cpu", dtype: torch.dtype | None = None
) -> LanguageModel:
    """Load a Hugging Face checkpoint directory (``config.json`` + safetensors weights) as our model, in eval
    mode. ``dtype`` defaults to the checkpoint's own (``dtype``/``torch_dtype``), else float32. Anything wrong
    with the directory (an unsupported family or feature, missing or mismatched tensors, pickled weights) is a
    :class:`specs.CheckpointError` naming every problem, raised before a tensor is read."""
    root = Path(path)
    if dtype is not None and dtype not in _DTYPE_NAMES:
        raise ValueError(f"dtype {dtype} is not supported; use one of {', '.join(DTYPES)}")
    hf = _read_json(root / _CONFIG)
    family = _family(hf.get("model_type"), root)
    dtype = dtype or _checkpoint_dtype(hf, root)
    name = hf.get("_name_or_path") or root.resolve().name
    try:
        cfg = family.config_from_hf(hf, name=str(name), dtype=_DTYPE_NAMES[dtype])
    except ValueError as exc:  # ConfigError included: the config.json asks for something we cannot build
        raise CheckpointError([f"{_CONFIG}: {line.strip()}" for line in str(exc).splitlines() if line.strip()], root) from None

    model = build(cfg, device="meta")
    names = {ours: family.hf_name(ours, cfg) for ours in model.state_dict(keep_vars=True)}
    inexpressible = sorted(ours for ours, hf_name in names.items() if hf_name is None)
    if inexpressible:  # a family/assembler mismatch, not a user error
        raise CheckpointError(f"{family.model_type} has no name for our tensors: {', '.join(inexpressible)}", root)
    _refuse_pickles(root)
    load_weights(
        model,
        root,
        _base_model_names({ours: where for ours, where in names.items() if where is not None}, root, family),
        ignored=lambda hf_name: family.ignored(hf_name, cfg),
        device=device,
        dtype=dtype,
        described_by=f"config.json ({_architecture(hf, family)})",
    )
    return model.eval()


def to_hf(model: nn.Module, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Write ``model`` as a Hugging Face checkpoint directory (``config.json`` + ``model.safetensors``),
    atomically. Raises ``ValueError`` listing every feature no supported family can express.

    ``path`` may be missing or an empty directory; with ``overwrite`` it may also be a Hugging Face checkpoint
    (a ``config.json`` with a ``model_type``, and only files such checkpoints hold), which is swapped for the
    new one in one step. Anything else is refused (:mod:`model.target_rules`)."""
    cfg = getattr(model, "config", None)
    if not isinstance(cfg, ModelConfig):
        raise TypeError(f"to_hf needs a model built from a ModelConfig (a .config attribute); got {type(model)}")
    reasons = {mt: family.export_problems(cfg) for mt, family in HF_FAMILIES.items()}
    family = next((HF_FAMILIES[mt] for mt, found in reasons.items() if not found), None)
    if family is None:
        lines = [f"{mt}: {reason}" for mt, found in reasons.items() for reason in found]
        raise ValueError(f"no Hugging Face family can express model {cfg.name!r}:\n  " + "\n  ".join(lines))

    tensors: dict[str, torch.Tensor] = {}
    packed: dict[str, tuple[Packed, dict[int, torch.Tensor]]] = {}  # stored name -> (layout, our pieces)
    for ours, tensor in model.state_dict().items():
        hf_name = family.hf_name(ours, cfg)
        if hf_name is None:
            raise ValueError(f"{family.model_type} has no name for our tensor {ours!r}")
        tensor = tensor.detach().to("cpu").contiguous()
        if isinstance(hf_name, Packed):  # one piece of a stored tensor: packed once all pieces are in
            packed.setdefault(hf_name.name, (hf_name, {}))[1][hf_name.part] = tensor
            continue
        if isinstance(hf_name, Stacked):  # one stored tensor per slice (a MoE's experts)
            tensors.update(hf_name.pack(tensor))
            continue
        if hf_name in tensors:  # tied: several of our names share one stored tensor
            if not torch.equal(tensors[hf_name], tensor):
                raise ValueError(f"{ours} should be tied to (equal to) the tensor stored as {hf_name}, but differs")
            continue
        tensors[hf_name] = tensor
    for name, (layout, pieces) in packed.items():
        tensors[name] = layout.pack(pieces)
    floating = [t.dtype for t in tensors.values() if t.is_floating_point()]
    common = max(set(floating), key=floating.count) if floating else None
    if common not in _DTYPE_NAMES:
        raise ValueError(f"cannot export parameters of dtype {common}; use one of {', '.join(DTYPES)}")
    dtype = _DTYPE_NAMES[common]

    with atomic_directory(path, overwrite=overwrite, kind=HUGGING_FACE) as staging:
        config = json.dumps(family.hf_config(cfg, dtype=dtype), indent=2, sort_keys=True) + "\n"
        (staging / _CONFIG).write_text(config, encoding="utf-8")
        with safetensors_os_errors():
            save_file(tensors, str(staging / WEIGHTS_NAME), metadata={"format": "pt"})
    return Path(path)


# ---------------------------------------------------------------------------------------------------- helpers


def _family(model_type: object, root: Path) -> HFFamily:
    if not isinstance(model_type, str) or model_type not in HF_FAMILIES:
        raise CheckpointError(
            f"{_CONFIG}: unsupported Hugging Face model_type {model_type!r}; supported: {', '.join(sorted(HF_FAMILIES))}",
            root,
        )
    return HF_FAMILIES[model_type]


def _architecture(hf: dict[str, Any], family: HFFamily) -> str:
    named = hf.get("architectures")
    return str(named[0]) if isinstance(named, list) and named else family.architecture


def _base_model_names(names: dict[str, Where], root: Path, family: HFFamily) -> dict[str, Where]:
    """A checkpoint saved from the base model (``GPT2Model``; the Hub's ``gpt2`` is one) names its tensors
    without the LM's prefix (``h.0.ln_1.weight``, not ``transformer.h.0.ln_1.weight``); transformers loads it
    into the LM all the same, and so do we. Nothing changes when any stored name carries the prefix."""
    prefix = family.base_prefix
    stored = set(stored_tensors(root)[0])
    if not prefix or not stored or any(name.startswith(prefix) for name in stored):
        return names

    def strip(where: Where) -> Where:
        if isinstance(where, Packed):
            return dataclasses.replace(where, name=where.name.removeprefix(prefix))
        if isinstance(where, Stacked):
            return Stacked(tuple(name.removeprefix(prefix) for name in where.names))
        return where.removeprefix(prefix)

    return {ours: strip(where) for ours, where in names.items()}


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"{path.name}: missing; not a Hugging Face model directory", path.parent)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path.name}: not valid JSON ({exc})", path.parent) from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path.name}: must hold a JSON object", path.parent)
    return data


def _checkpoint_dtype(hf: dict[str, Any], root: Path) -> torch.dtype:
    name = hf.get("dtype") or hf.get("torch_dtype") or "float32"
    if name not in DTYPES:
        raise CheckpointError(
            f"{_CONFIG}: dtype {name!r} is not supported; pass dtype= one of {', '.join(DTYPES)}", root
        )
    return DTYPES[name]


def _refuse_pickles(root: Path) -> None:
    has_safetensors = (root / WEIGHTS_NAME).is_file() or (root / INDEX_NAME).is_file()
    pickled = [name for name in _PICKLED if (root / name).exists()]
    if pickled and not has_safetensors:
        raise CheckpointError(
            f"holds only pickled weights ({', '.join(pickled)}); lmplanes never unpickles checkpoints. "
            "Convert them to safetensors (model.safetensors) first.",
            root,
        )
