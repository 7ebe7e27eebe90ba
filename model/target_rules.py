"""What a checkpoint write may replace: the rules :func:`model.atomic.atomic_directory` applies to its target.

A target may be missing, an empty directory (no ``overwrite`` needed: people ``mkdir out`` first), or, with
``overwrite``, a directory that is itself a checkpoint of the kind being written and holds nothing else.
Everything else is refused with :class:`RefusedTarget`, even with ``overwrite``: a regular file, a symbolic
link, a special file, a directory of someone's files, a checkpoint to which someone added a file, the current
directory or one of its ancestors, the filesystem root. The message is one line naming the user's path and
what is there.

Each writer recognises only its own kind of checkpoint (a :class:`CheckpointKind`):

- :data:`LMPLANES` for ``save_checkpoint``: a readable ``MANIFEST.json`` of format ``lmplanes-manifest``;
  every file it does not list is a stray.
- :data:`HUGGING_FACE` for ``to_hf``: a ``config.json`` with a ``model_type`` key; every entry that is not a
  file Hugging Face checkpoints hold (configs, weights, tokenizer files) is a stray.

So ``to_hf`` never replaces one of our checkpoints, nor ``save_checkpoint`` a Hugging Face directory: a
user who points one writer at the other's output has most likely mistyped a path.
"""

from __future__ import annotations

import fnmatch
import json
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from specs.manifest import RELEASE_DIR, listed_paths

HF_FILES = frozenset(
    {
        "config.json",
        "generation_config.json",
        "model.safetensors.index.json",
        "pytorch_model.bin.index.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "added_tokens.json",
        "chat_template.jinja",
        "chat_template.json",
        "vocab.json",
        "vocab.txt",
        "merges.txt",
        "tokenizer.model",
        "spiece.model",
    }
)
HF_PATTERNS = ("*.safetensors", "pytorch_model*.bin")
_SHOWN = 3  # stray names quoted in a refusal before "..."


class RefusedTarget(FileExistsError):
    """A checkpoint write will not replace what is at its target (or needs ``overwrite`` to)."""


@dataclass(frozen=True)
class CheckpointKind:
    """How to recognise an existing checkpoint directory that a writer may replace."""

    name: str  # "an lmplanes checkpoint"
    marker: str  # what marks one: "MANIFEST.json"
    stray_reason: str  # how strays differ: "not listed in its MANIFEST.json"
    strays: Callable[[Path], list[str] | None]
    """Given an existing, non-empty directory: None when it is not such a checkpoint, else the entries in it
    that such a checkpoint does not hold (``"notes.txt"``, ``"data/"``); empty when it may be replaced."""


def lmplanes_strays(directory: Path) -> list[str] | None:
    """The entries of ``directory`` that its lmplanes ``MANIFEST.json`` does not list (None without one). Its
    ``artifacts/`` folder (a ``governance`` release of it, which the manifest leaves out) belongs to it."""
    listed = listed_paths(directory)
    if listed is None:
        return None
    holders = {parent.as_posix() for rel in listed for parent in Path(rel).parents}
    strays = []
    for dirpath, dirnames, filenames in os.walk(directory):
        rel_dir = Path(dirpath).relative_to(directory)
        for name in list(dirnames):  # os.walk lists a symlinked directory here and does not follow it
            rel = (rel_dir / name).as_posix()
            if rel == RELEASE_DIR and not os.path.islink(os.path.join(dirpath, name)):
                dirnames.remove(name)  # governance's release of this checkpoint: stale once it is replaced
                continue
            if rel not in holders or os.path.islink(os.path.join(dirpath, name)):
                strays.append(rel + "/")
                dirnames.remove(name)  # one entry for a whole folder the manifest knows nothing of
        strays += [(rel_dir / name).as_posix() for name in filenames if (rel_dir / name).as_posix() not in listed]
    return sorted(strays)


def hf_strays(directory: Path) -> list[str] | None:
    """The entries of ``directory`` that are not Hugging Face checkpoint files (None without a ``config.json``
    naming a ``model_type``)."""
    try:
        config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        config = None
    if not isinstance(config, dict) or "model_type" not in config:
        return None
    strays = []
    for entry in sorted(os.scandir(directory), key=lambda e: e.name):
        # A hub cache snapshot holds its files as symlinks to blobs; removing a link leaves the blob.
        known = entry.name in HF_FILES or any(fnmatch.fnmatchcase(entry.name, p) for p in HF_PATTERNS)
        if not known or entry.is_dir(follow_symlinks=False):
            strays.append(entry.name + ("/" if entry.is_dir(follow_symlinks=False) else ""))
    return strays


def resolve_target(path: str | os.PathLike[str]) -> Path:
    """The absolute path a write to ``path`` replaces: its folder resolved, its last component kept as written
    (so a symlink at ``path`` is seen, not followed). Refuses the root, the current directory and its
    ancestors, whatever the spelling (``.``, ``..``, an absolute path)."""
    shown = os.fspath(path)
    given = Path(path)
    if given.name in ("", ".", ".."):  # names a directory by reference, not by an entry in a folder
        given = Path(os.path.realpath(given))
    final = Path(os.path.realpath(given.parent)) / given.name
    if final.parent == final:
        raise RefusedTarget(f"{shown}: is the filesystem root; refusing to replace it")
    real = Path(os.path.realpath(final))
    cwd = Path(os.path.realpath(os.getcwd()))
    if real == cwd or real in cwd.parents:
        where = "the current directory" if real == cwd else f"an ancestor of the current directory ({cwd})"
        raise RefusedTarget(f"{shown}: is {where}; refusing to replace it")
    return final


LMPLANES = CheckpointKind("an lmplanes checkpoint", "MANIFEST.json", "not listed in its MANIFEST.json", lmplanes_strays)
HUGGING_FACE = CheckpointKind(
    "a Hugging Face checkpoint", "config.json with a model_type", "that Hugging Face checkpoints do not hold", hf_strays
)


def inspect_target(final: Path, shown: str, *, overwrite: bool, kind: CheckpointKind) -> str:
    """``"missing"``, ``"empty"`` or ``"checkpoint"`` (replaceable with ``overwrite``); anything else raises
    :class:`RefusedTarget` naming ``shown`` (the path as the user wrote it)."""
    try:
        st = os.lstat(final)
    except FileNotFoundError:
        return "missing"
    if stat.S_ISLNK(st.st_mode):
        raise RefusedTarget(
            f"{shown}: is a symbolic link (to {os.readlink(final)}), not a checkpoint directory; refusing to replace it"
        )
    if not stat.S_ISDIR(st.st_mode):
        what = "file" if stat.S_ISREG(st.st_mode) else "special file"
        raise RefusedTarget(f"{shown}: is a {what}, not a checkpoint directory; refusing to replace it")
    if os.path.ismount(final):
        raise RefusedTarget(f"{shown}: is a mount point; refusing to replace it")
    entries = sorted(e.name + ("/" if e.is_dir(follow_symlinks=False) else "") for e in os.scandir(final))
    if not entries:
        return "empty"
    strays = kind.strays(final)
    if strays is None:
        raise RefusedTarget(
            f"{shown}: is not {kind.name} (no {kind.marker}) and holds {_count(entries)} ({_names(entries)}); "
            f"refusing to delete {'it' if len(entries) == 1 else 'them'}"
        )
    if strays:
        raise RefusedTarget(
            f"{shown}: holds {_count(strays)} {kind.stray_reason} ({_names(strays)}); "
            f"refusing to delete {'it' if len(strays) == 1 else 'them'}"
        )
    if not overwrite:
        raise RefusedTarget(f"{shown}: already exists; pass overwrite=True to replace it")
    return "checkpoint"


def _count(names: list[str]) -> str:
    return "1 entry" if len(names) == 1 else f"{len(names)} entries"


def _names(names: list[str]) -> str:
    return ", ".join(names[:_SHOWN]) + (", ..." if len(names) > _SHOWN else "")
