"""One way to put stored weights into a model: check everything first, then read.

Our checkpoints and Hugging Face imports differ only in how tensors are named and laid out on disk, so both
go through :func:`check_stored` / :func:`load_weights` with a *name map*: our state-dict name -> the stored
name, or a :class:`Packed` entry when the stored tensor holds ours in another layout (transposed, or several of
ours concatenated: GPT-2's ``Conv1D`` weights and fused ``c_attn``), or a :class:`Stacked` entry when ours is
stored as one tensor per slice (a MoE's batched experts, one tensor per expert in Hugging Face files). The model is built on the meta device, the
safetensors headers are read and compared with it (names, shapes -- a packed entry gives the stored shape from
ours --, index consistency) and every problem is reported at once as a :class:`specs.CheckpointError`, before
a single tensor is read; then the tensors are loaded straight onto the target device with ``assign=True`` and
tied weights are re-tied.

Other containers (GGUF, :mod:`model.gguf`) list their tensors their own way and reuse the two halves:
:func:`compare` (names and shapes against the model, one line per problem) and :func:`assign`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from model.weight_files import INDEX_NAME, weight_files
from specs.errors import CheckpointError


@dataclass(frozen=True, slots=True)
class StoredTensor:
    file: str
    shape: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Packed:
    """Where one of our tensors sits inside a stored tensor of another layout: the stored tensor ``name`` is
    ``parts`` equal pieces of ours concatenated along our dim 0 (this one is piece ``part``), transposed when
    ``transposed`` (a 2-D ``[in, out]`` weight, like GPT-2's ``Conv1D``). One description serves both ways:
    :meth:`unpack` on load, :meth:`pack` on export, :meth:`stored_shape` to check a header before reading."""

    name: str
    part: int = 0
    parts: int = 1
    transposed: bool = False

    def stored_shape(self, ours: Sequence[int]) -> tuple[int, ...]:
        shape = (ours[0] * self.parts, *ours[1:]) if ours else ()
        return shape[::-1] if self.transposed else shape

    def unpack(self, stored: torch.Tensor) -> torch.Tensor:
        """Our piece of ``stored``, as a tensor of its own (never a view that keeps the packed one alive)."""
        whole = stored.t() if self.transposed else stored
        return whole.chunk(self.parts, dim=0)[self.part].clone(memory_format=torch.contiguous_format)

    def pack(self, pieces: Mapping[int, torch.Tensor]) -> torch.Tensor:
        """The stored tensor from all ``parts`` pieces, by part number."""
        if sorted(pieces) != list(range(self.parts)):
            raise ValueError(f"{self.name} packs {self.parts} of our tensors; the model has parts {sorted(pieces)}")
        whole = torch.cat([pieces[part] for part in range(self.parts)], dim=0)
        return (whole.t() if self.transposed else whole).contiguous()


@dataclass(frozen=True, slots=True)
class Stacked:
    """One of our tensors stored as ``len(names)`` tensors, slice ``i`` of our dim 0 under ``names[i]`` (our
    ``(E, out, in)`` expert weights; Hugging Face stores ``experts.{i}.w1.weight`` per expert).
    :meth:`unpack` on load, :meth:`pack` on export, :meth:`stored_shape` of each stored slice."""

    names: tuple[str, ...]

    def stored_shape(self, ours: Sequence[int]) -> tuple[int, ...]:
        return tuple(ours[1:])

    def unpack(self, stored: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.stack(list(stored))

    def pack(self, ours: torch.Tensor) -> dict[str, torch.Tensor]:
        """Stored name -> its slice of ``ours``, each a contiguous tensor of its own."""
        if ours.shape[0] != len(self.names):
            raise ValueError(f"{self.names[0]}...: {len(self.names)} stored slices, but our tensor has {ours.shape[0]}")
        return {name: piece.clone() for name, piece in zip(self.names, ours.unbind(0), strict=True)}


Where = str | Packed | Stacked  # a name map's value: the stored name(s), or where in a stored tensor of another layout


def stored_names(where: Where) -> tuple[str, ...]:
    """The stored tensors ``where`` reads."""
    if isinstance(where, Stacked):
        return where.names
    return (where.name if isinstance(where, Packed) else where,)


def stored_tensors(root: Path) -> tuple[dict[str, StoredTensor], list[str]]:
    """Every tensor the weight files of ``root`` hold (from their headers only), and the problems found on the
    way: unreadable files, tensors stored twice, a shard index that disagrees with its shards."""
    stored: dict[str, StoredTensor] = {}
    problems: list[str] = []
    for file, indexed in weight_files(root).items():
        try:
            with safe_open(str(root / file), framework="pt", device="cpu") as fh:
                shapes = {name: tuple(fh.get_slice(name).get_shape()) for name in fh.keys()}  # noqa: SIM118
        except (SafetensorError, OSError, RuntimeError) as exc:
            problems.append(f"{file}: not a readable safetensors file ({exc})")
            continue
        if indexed is not None:
            problems += [f"{file}: lacks tensor {n!r}, which {INDEX_NAME} places in it" for n in sorted(set(indexed) - set(shapes))]
            problems += [f"{file}: holds tensor {n!r}, which {INDEX_NAME} does not place in it" for n in sorted(set(shapes) - set(indexed))]
        for name, shape in shapes.items():
            if name in stored:
                problems.append(f"{file}: tensor {name!r} is also stored in {stored[name].file}")
            else:
                stored[name] = StoredTensor(file, shape)
    return stored, problems


def check_stored(
    model: nn.Module,
    root: Path,
    names: Mapping[str, Where],
    *,
    ignored: Callable[[str], bool] = lambda name: False,
    described_by: str = "config.json",
) -> dict[str, StoredTensor]:
    """Compare the stored tensors with ``model`` (on any device, meta included) through ``names``; raise a
    :class:`CheckpointError` listing every problem, or return what is stored."""
    stored, problems = stored_tensors(root)
    readable = not any("not a readable safetensors file" in p for p in problems)
    problems += compare(model, stored, names, ignored=ignored, described_by=described_by, complete=readable)
    if problems:
        raise CheckpointError(sorted(dict.fromkeys(problems), key=problems.index), root)
    return stored


def compare(
    model: nn.Module,
    stored: Mapping[str, StoredTensor],
    names: Mapping[str, Where],
    *,
    ignored: Callable[[str], bool] = lambda name: False,
    described_by: str = "config.json",
    complete: bool = True,
) -> list[str]:
    """One line per difference between what is ``stored`` and what ``model`` (any device, meta included) holds
    through ``names`` (our name -> stored name or :class:`Packed` place): unmapped tensors of ours, shapes that differ, stored tensors
    missing (only reported when the listing is ``complete``) or left over (unless ``ignored``)."""
    problems: list[str] = []
    files = sorted({t.file for t in stored.values()})
    searched = files[0] if len(files) == 1 else f"any of the {len(files)} weight files"
    wanted = {ours: tuple(t.shape) for ours, t in model.state_dict(keep_vars=True).items()}
    unmapped = sorted(set(wanted) - set(names))
    if unmapped:  # an assembler/name-table mismatch, not a damaged file; still reported, never guessed
        problems.append(f"no stored name is known for our tensors: {', '.join(unmapped)}")
    for ours, where in names.items():
        expected = wanted[ours] if isinstance(where, str) else where.stored_shape(wanted[ours])
        for name in stored_names(where):
            if name in stored and stored[name].shape != expected:
                problems.append(
                    f"{stored[name].file}: tensor {name!r} has shape {list(stored[name].shape)}, the model built "
                    f"from {described_by} expects {list(expected)}"
                )
            elif name not in stored and complete:  # an unreadable file's tensors are not known to be missing
                problems.append(f"missing tensor {name!r} (shape {list(expected)}): not in {searched}")
    mapped = {name for where in names.values() for name in stored_names(where)}
    for name in sorted(set(stored) - mapped):
        if ignored(name):
            continue
        why = (
            f"the config ties it to {stored_names(names[name])[0]!r}"
            if name in names
            else f"the model built from {described_by} has none"
        )
        problems.append(f"{stored[name].file}: unexpected tensor {name!r}; {why}")
    return problems


def load_weights(
    model: nn.Module,
    root: Path,
    names: Mapping[str, Where],
    *,
    ignored: Callable[[str], bool] = lambda name: False,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
    described_by: str = "config.json",
) -> None:
    """Fill ``model`` (built on the meta device; it must have ``tie_weights()``) with the tensors stored under
    ``root``, after :func:`check_stored`. Floating tensors are cast to ``dtype`` when given, then packed
    entries are unpacked."""
    stored = check_stored(model, root, names, ignored=ignored, described_by=described_by)
    loaded: dict[str, torch.Tensor] = {}
    wanted = dict.fromkeys(name for where in names.values() for name in stored_names(where))
    with _open(root, {stored[name].file for name in wanted}) as handles:
        for name in wanted:
            try:
                tensor = handles[stored[name].file].get_tensor(name)
            except (SafetensorError, OSError, RuntimeError) as exc:
                raise CheckpointError(f"{stored[name].file}: could not read tensor {name!r} ({exc})", root) from None
            if dtype is not None and tensor.is_floating_point():
                tensor = tensor.to(dtype)
            loaded[name] = tensor.to(device)
    state = {ours: _unpack(where, loaded) for ours, where in names.items()}
    assign(model, state, root)


def assign(model: nn.Module, tensors: Mapping[str, torch.Tensor], source: str | os.PathLike[str]) -> None:
    """Put ``tensors`` (our names, every one of them) into ``model`` (built on the meta device; it must have
    ``tie_weights()``), re-tie, and refuse a model left with anything on the meta device."""
    model.load_state_dict(dict(tensors), strict=True, assign=True)
    model.tie_weights()  # type: ignore[operator]  # assign=True gave each alias its own Parameter
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise CheckpointError([f"{n}: not restored (still on the meta device)" for n in left], source)


def _unpack(where: Where, loaded: Mapping[str, torch.Tensor]) -> torch.Tensor:
    if isinstance(where, Packed):
        return where.unpack(loaded[where.name])
    if isinstance(where, Stacked):
        return where.unpack([loaded[name] for name in where.names])
    return loaded[where]


@contextlib.contextmanager
def _open(root: Path, files: set[str]) -> Iterator[dict[str, Any]]:
    with contextlib.ExitStack() as stack:
        try:
            handles = {file: stack.enter_context(safe_open(str(root / file), framework="pt")) for file in files}
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"could not open the weight files ({exc})", root) from None
        yield handles
