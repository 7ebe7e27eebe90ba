"""Checkpoint directories (DESIGN section 4): save and load a model as safetensors + config + card + manifest.

Layout::

    config.json                      the versioned ModelConfig
    model.safetensors                or model-0000N-of-0000M.safetensors + model.safetensors.index.json (HF layout)
    modelcard.json                   ModelCard, listing the weight files and config.json with their sha256
    MANIFEST.json                    every file with size and sha256 and a content id; written last
    train_state/                     optional, reserved for exact resume; covered by the manifest when present

The whole directory is written under a temporary name and swapped into place (:func:`atomic_directory`, which
also decides what an existing target may be), so a crash never leaves a directory that looks complete. Weights never go through pickle: tied weights are stored
once (the alias the architecture declares, e.g. ``lm_head.weight`` under ``tie_embeddings``, is left out and
re-tied on load). Loading verifies the manifest before any tensor is read, then checks tensor names and
shapes against the model the config builds, and reports every problem at once.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from model.atomic import atomic_directory
from model.build import LanguageModel, build
from model.card_writer import file_refs, make_card
from model.loading import check_stored, load_weights
from model.quantize import own_int8_buffers, quantize_int8
from model.weight_files import INDEX_NAME, WEIGHTS_NAME, safetensors_os_errors
from specs.card import ModelCard
from specs.config_files import atomic_write_text, dump_config, dumps_config, load_config
from specs.config_io import to_dict
from specs.errors import CheckpointError, ConfigError
from specs.manifest import verify_manifest, write_manifest
from specs.model_config import ModelConfig
from specs.quantization import QUANTIZATION_NAME, read_quantization

CONFIG_NAME = "config.json"
CARD_NAME = "modelcard.json"
TRAIN_STATE_DIR = "train_state"
_METADATA = {"format": "pt"}


# -------------------------------------------------------------------------------------------------------- save


def save_checkpoint(
    model: nn.Module,
    path: str | os.PathLike[str],
    card: ModelCard | None = None,
    *,
    max_shard_bytes: int | None = None,
    overwrite: bool = False,
    card_fields: Mapping[str, Any] | None = None,
    extra: Callable[[Path], None] | None = None,
) -> Path:
    """Write ``model`` as a checkpoint directory at ``path`` and return that path.

    ``card`` (default: :func:`make_card` of the model, with ``card_fields`` such as ``training_data``,
    ``metrics`` or ``tokenizer``) is written with its ``files`` replaced by the weight files and
    ``config.json``. ``extra`` is called with the directory being written, after the weights and before the
    manifest, to add files of its own (a trainer's ``train_state/``, a tokenizer): they are covered by the
    manifest and published atomically with the rest. ``max_shard_bytes`` splits the weights greedily, in state-dict order, into
    Hugging Face style shards when they do not fit one file (a tensor larger than the limit gets a shard of
    its own).

    ``path`` may be missing (its missing parent folders are created, as Hugging Face's ``save_pretrained``
    does) or an empty directory. An existing checkpoint (a directory with our ``MANIFEST.json`` and no file
    it does not list) raises ``FileExistsError`` unless ``overwrite``; then it is swapped for the new one in
    one step once that is complete. Anything else at ``path`` (a file, a symlink, a folder of other files, the
    current directory) is refused even with ``overwrite``. Temporaries left beside ``path`` by a killed
    save are removed first (and logged). See :mod:`model.atomic`.
    """
    model = getattr(model, "_orig_mod", model)  # torch.compile's wrapper: save the module it compiled
    cfg = getattr(model, "config", None)
    if not isinstance(cfg, ModelConfig):
        raise TypeError(f"{type(model).__name__} has no ModelConfig as .config; cannot write a checkpoint of it")
    if max_shard_bytes is not None and max_shard_bytes < 1:
        raise ValueError(f"max_shard_bytes must be >= 1, got {max_shard_bytes}")
    if card is not None and card.config != to_dict(cfg):
        raise ValueError("card.config does not describe model.config; build the card from this model (make_card)")
    if card is not None and card_fields:
        raise ValueError("pass either a card or card_fields to build one, not both")
    tensors = _tensors_to_save(model, cfg)
    final = Path(path)
    with atomic_directory(path, overwrite=overwrite) as staging:  # path as given: errors name it as the user wrote it
        dump_config(cfg, staging / CONFIG_NAME)
        weight_files = _write_weights(staging, tensors, max_shard_bytes)
        refs = file_refs(staging, [*weight_files, CONFIG_NAME])
        if card is not None:
            card = dataclasses.replace(card, files=tuple(refs))
        else:
            card = make_card(model, refs, **dict(card_fields or {}))
        atomic_write_text(staging / CARD_NAME, dumps_config(card, "json"))
        if extra is not None:
            extra(staging)
        write_manifest(staging, known={ref.path: (ref.size, ref.sha256) for ref in refs})
    return final


def tied_aliases(model: nn.Module) -> dict[str, str]:
    """``{alias: source}`` for every state-dict entry that is the same tensor object as an earlier one."""
    first: dict[int, str] = {}
    aliases = {}
    for name, tensor in [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]:
        if id(tensor) in first:
            aliases[name] = first[id(tensor)]
        else:
            first[id(tensor)] = name
    return aliases


def _tensors_to_save(model: nn.Module, cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """The state dict, detached and contiguous, with the architecture's tied aliases dropped and any other
    memory sharing broken by a copy (safetensors refuses tensors that share storage)."""
    state = model.state_dict()
    reference = build(cfg, device="meta")
    wanted = {name: tuple(t.shape) for name, t in reference.state_dict().items()}
    found = {name: tuple(t.shape) for name, t in state.items()}
    if found != wanted:  # a checkpoint that load_checkpoint would refuse must not be written
        problems = [f"unexpected {n}" for n in sorted(found.keys() - wanted.keys())]
        problems += [f"missing {n}" for n in sorted(wanted.keys() - found.keys())]
        problems += [
            f"{n}: shape {list(found[n])}, config says {list(wanted[n])}"
            for n in sorted(found.keys() & wanted.keys())
            if found[n] != wanted[n]
        ]
        raise ValueError(
            f"the model's tensors do not match its config ({cfg.name or 'unnamed'}): " + "; ".join(problems)
        )
    declared = tied_aliases(reference)
    out: dict[str, torch.Tensor] = {}
    storages: dict[tuple[str, int], str] = {}
    for name, tensor in state.items():
        tensor = tensor.detach()
        if tensor.device.type == "meta":
            raise ValueError(f"{name} is on the meta device (never materialised); nothing to save")
        if name in declared:
            source = declared[name]
            if not _same_view(tensor, state[source]) and not torch.equal(tensor, state[source]):
                raise ValueError(
                    f"{name} is not tied to {source} and holds different values, but the architecture ties them "
                    f"(tie_embeddings); saving would lose {name}. Re-tie it (module.{name} = module.{source})"
                )
            continue
        key = (str(tensor.device), tensor.untyped_storage().data_ptr())
        if tensor.numel() and key[1]:
            if key in storages:  # shares memory with a kept tensor the architecture does not tie: copy it
                tensor = tensor.clone(memory_format=torch.contiguous_format)
            else:
                storages[key] = name
        out[name] = tensor.contiguous()
    return out


def _same_view(a: torch.Tensor, b: torch.Tensor) -> bool:
    return (
        a.device == b.device
        and a.dtype == b.dtype
        and a.shape == b.shape
        and a.stride() == b.stride()
        and a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()
        and a.storage_offset() == b.storage_offset()
    )


def _write_weights(root: Path, tensors: dict[str, torch.Tensor], max_shard_bytes: int | None) -> list[str]:
    """Write one file, or shards plus the index; return the relative paths written."""
    sizes = {name: t.numel() * t.element_size() for name, t in tensors.items()}
    total = sum(sizes.values())
    if max_shard_bytes is None or total <= max_shard_bytes:
        with safetensors_os_errors():
            save_file(tensors, str(root / WEIGHTS_NAME), metadata=_METADATA)
        return [WEIGHTS_NAME]
    shards: list[list[str]] = [[]]
    used = 0
    for name, size in sizes.items():
        if shards[-1] and used + size > max_shard_bytes:
            shards.append([])
            used = 0
        shards[-1].append(name)
        used += size
    n = len(shards)
    names = [f"model-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)]
    weight_map = {}
    for file, members in zip(names, shards, strict=True):
        with safetensors_os_errors():
            save_file({k: tensors[k] for k in members}, str(root / file), metadata=_METADATA)
        weight_map.update(dict.fromkeys(members, file))
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    atomic_write_text(root / INDEX_NAME, json.dumps(index, indent=2) + "\n")
    return [*names, INDEX_NAME]


# -------------------------------------------------------------------------------------------------------- load


def load_checkpoint(
    path: str | os.PathLike[str],
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
    verify: bool = True,
) -> LanguageModel:
    """Load a checkpoint directory written by :func:`save_checkpoint`; return the model in eval mode.

    With ``verify`` (the default) the manifest is checked first, and any missing, truncated, altered or
    unlisted file raises :class:`CheckpointError` before a tensor is read. Tensor names and shapes are then
    checked against the model ``config.json`` builds. ``dtype`` casts floating tensors while loading; without
    it they keep the dtype they were saved in.
    """
    root, cfg = _open_checkpoint(path, verify=verify)
    model = _skeleton(root, cfg)
    if dtype is not None and (marker := read_quantization(root)) is not None and dtype != getattr(torch, marker["compute_dtype"]):
        raise CheckpointError(
            f"{QUANTIZATION_NAME}: an int8 checkpoint computes in {marker['compute_dtype']}; load it without a dtype", root
        )
    load_weights(model, root, _stored_names(model), device=device, dtype=dtype)
    own_int8_buffers(model)
    return model.eval()


def verify_checkpoint(path: str | os.PathLike[str]) -> list[str]:
    """Every problem of a checkpoint directory, one line each (empty when it is intact): its manifest (every
    file hashed), its config, and its tensor names and shapes against the model the config builds. Reads
    the safetensors headers only, never the tensor data."""
    try:
        root, cfg = _open_checkpoint(path, verify=True)
        model = _skeleton(root, cfg)
        check_stored(model, root, _stored_names(model))
    except CheckpointError as exc:
        return exc.problems
    return []


def _open_checkpoint(path: str | os.PathLike[str], *, verify: bool) -> tuple[Path, ModelConfig]:
    root = Path(path)
    if not root.exists():
        raise CheckpointError(f"{root}: no such checkpoint directory")
    if not root.is_dir():
        raise CheckpointError(f"{root}: not a directory; a checkpoint is a directory holding {CONFIG_NAME}", root)
    if verify and (problems := verify_manifest(root)):
        raise CheckpointError(problems, root)
    if not (root / CONFIG_NAME).is_file():
        raise CheckpointError(f"{CONFIG_NAME}: missing; cannot tell which model to build", root)
    try:
        cfg = load_config(root / CONFIG_NAME, kind="model")
    except ConfigError as exc:
        raise CheckpointError(f"{CONFIG_NAME}: {exc}", root) from None
    return root, cfg


def _skeleton(root: Path, cfg: ModelConfig) -> LanguageModel:
    """The model ``cfg`` describes, on the meta device; with int8 linears when the checkpoint holds them
    (``quantization.json``, written by ``export``), so names, shapes and dtypes match what is stored."""
    model = build(cfg, device="meta")
    marker = read_quantization(root)
    if marker is not None:
        quantize_int8(model, compute_dtype=getattr(torch, marker["compute_dtype"]))
    return model


def _stored_names(model: nn.Module) -> dict[str, str]:
    """Our checkpoints store every tensor under its own name, except tied aliases, stored once as their source."""
    aliases = tied_aliases(model)
    return {name: aliases.get(name, name) for name in model.state_dict(keep_vars=True)}
