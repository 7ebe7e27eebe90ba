"""Hugging Face interop: :func:`from_hf` imports a ``transformers`` checkpoint directory, :func:`to_hf` writes
one that ``transformers.AutoModelForCausalLM`` loads.

``transformers`` is never imported: ``config.json`` is read as JSON and weights as safetensors (pickled
``pytorch_model.bin`` files are refused). Each supported family, keyed by ``config.json``'s ``model_type``,
supplies the config mapping and plain name tables (``config_from_hf``, ``hf_config``, ``export_problems``,
``hf_name``, ``ignored``); the loading, checking and writing here are shared by all of them.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from model.atomic import atomic_directory
from model.build import DTYPES, build
from model.hf_llama import LlamaFamily
from model.target_rules import HUGGING_FACE
from model.weight_files import INDEX_NAME, WEIGHTS_NAME, safetensors_os_errors, weight_files
from specs.model_config import ModelConfig


class HFFamily(Protocol):
    """What a supported Hugging Face family supplies: the config mapping both ways and plain name tables."""

    model_type: str  # config.json's model_type
    architecture: str  # config.json's architectures[0]

    def config_from_hf(self, hf: dict[str, Any], *, name: str, dtype: str) -> ModelConfig: ...

    def hf_config(self, cfg: ModelConfig, *, dtype: str) -> dict[str, Any]: ...

    def export_problems(self, cfg: ModelConfig) -> list[str]:
        """Why this family cannot express ``cfg`` (empty when it can)."""
        ...

    def hf_name(self, name: str, cfg: ModelConfig) -> str | None:
        """The Hugging Face name of our tensor ``name`` (None: the family has none)."""
        ...

    def ignored(self, hf_name: str, cfg: ModelConfig) -> bool:
        """Stored tensors the family knows and skips (e.g. derived RoPE buffers)."""
        ...


HF_FAMILIES: dict[str, HFFamily] = {"llama": LlamaFamily()}

_CONFIG = "config.json"
_PICKLED = ("pytorch_model.bin", "pytorch_model.bin.index.json")
_DTYPE_NAMES = {dtype: name for name, dtype in DTYPES.items()}


def from_hf(
    path: str | os.PathLike[str], *, device: torch.device | str = "cpu", dtype: torch.dtype | None = None
) -> nn.Module:
    """Load a Hugging Face checkpoint directory (``config.json`` + safetensors weights) as our model, in eval
    mode. ``dtype`` defaults to the checkpoint's own (``dtype``/``torch_dtype``), else float32."""
    root = Path(path)
    hf = _read_json(root / _CONFIG)
    family = _family(hf.get("model_type"))
    dtype = dtype or _checkpoint_dtype(hf)
    if dtype not in _DTYPE_NAMES:
        raise ValueError(f"dtype {dtype} is not supported; use one of {', '.join(DTYPES)}")
    name = hf.get("_name_or_path") or root.resolve().name
    cfg = family.config_from_hf(hf, name=str(name), dtype=_DTYPE_NAMES[dtype])

    model = build(cfg, device="meta")
    wanted = model.state_dict(keep_vars=True)  # meta tensors: names and shapes only
    names = {ours: family.hf_name(ours, cfg) for ours in wanted}
    inexpressible = sorted(ours for ours, hf_name in names.items() if hf_name is None)
    if inexpressible:  # a family/assembler mismatch, not a user error
        raise ValueError(f"{family.model_type} has no name for our tensors: {', '.join(inexpressible)}")

    with _open_weights(root) as files:
        problems = []
        missing = sorted({hf_name for hf_name in names.values() if hf_name not in files})
        if missing:
            problems.append(f"missing tensors: {', '.join(missing)}")
        mapped = set(names.values())
        unexpected = sorted(n for n in files if n not in mapped and not family.ignored(n, cfg))
        if unexpected:
            problems.append(f"unexpected tensors (not mapped to {type(model).__name__}): {', '.join(unexpected)}")
        shapes = {hf_name: list(files[hf_name].get_slice(hf_name).get_shape()) for hf_name in mapped & files.keys()}
        mismatched = [
            f"{hf_name}: checkpoint {shapes[hf_name]}, model {list(wanted[ours].shape)} ({ours})"
            for ours, hf_name in names.items()
            if hf_name in shapes and shapes[hf_name] != list(wanted[ours].shape)
        ]
        if mismatched:
            problems.append("shape mismatches: " + "; ".join(mismatched))
        if problems:
            raise ValueError(f"cannot load {root} as {family.architecture}:\n  " + "\n  ".join(problems))
        loaded: dict[str, torch.Tensor] = {}
        for hf_name in dict.fromkeys(names.values()):
            loaded[hf_name] = files[hf_name].get_tensor(hf_name).to(device=device, dtype=dtype)
    model.load_state_dict({ours: loaded[hf_name] for ours, hf_name in names.items()}, strict=True, assign=True)
    model.tie_weights()  # assign=True loading gave the head its own Parameter
    on_meta = [n for n, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
    if on_meta:
        raise ValueError(f"tensors left unmaterialised after loading: {', '.join(on_meta)}")
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
    for ours, tensor in model.state_dict().items():
        hf_name = family.hf_name(ours, cfg)
        if hf_name is None:
            raise ValueError(f"{family.model_type} has no name for our tensor {ours!r}")
        tensor = tensor.detach().to("cpu").contiguous()
        if hf_name in tensors:  # tied: several of our names share one stored tensor
            if not torch.equal(tensors[hf_name], tensor):
                raise ValueError(f"{ours} should be tied to (equal to) the tensor stored as {hf_name}, but differs")
            continue
        tensors[hf_name] = tensor
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


def _family(model_type: object) -> HFFamily:
    if model_type not in HF_FAMILIES:
        raise ValueError(
            f"unsupported Hugging Face model_type {model_type!r}; supported: {', '.join(sorted(HF_FAMILIES))}"
        )
    return HF_FAMILIES[model_type]


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: not a Hugging Face checkpoint directory")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object")
    return data


def _checkpoint_dtype(hf: dict[str, Any]) -> torch.dtype:
    name = hf.get("dtype") or hf.get("torch_dtype") or "float32"
    if name not in DTYPES:
        raise ValueError(f"checkpoint dtype {name!r} is not supported; pass dtype= one of {', '.join(DTYPES)}")
    return DTYPES[name]


@contextlib.contextmanager
def _open_weights(root: Path) -> Iterator[dict[str, Any]]:
    """Map every stored tensor name to the open safetensors file that holds it."""
    has_safetensors = (root / WEIGHTS_NAME).is_file() or (root / INDEX_NAME).is_file()
    pickled = [name for name in _PICKLED if (root / name).exists()]
    if pickled and not has_safetensors:
        raise ValueError(
            f"{root} holds only pickled weights ({', '.join(pickled)}); lmplanes never unpickles checkpoints. "
            "Convert them to safetensors (model.safetensors) first."
        )
    files = weight_files(root)  # {file: names the index assigns to it, or None for the single file}
    with contextlib.ExitStack() as stack:
        handles = {file: stack.enter_context(safe_open(str(root / file), framework="pt")) for file in files}
        stored = {file: set(handle.keys()) for file, handle in handles.items()}
        absent = sorted(n for file, names in files.items() for n in names or () if n not in stored[file])
        if absent:
            raise ValueError(f"tensors listed in {INDEX_NAME} are absent from their shards: {', '.join(absent)}")
        yield {name: handles[file] for file, names in files.items() for name in (names or stored[file])}

