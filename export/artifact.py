"""One export directory, written whole or not at all, with the ModelCard governance reads.

Every exporter writes into a hidden staging directory beside the target (``.NAME.tmp-*``); then
:func:`export_directory` adds ``config.json``, ``modelcard.json`` (a :class:`specs.ModelCard` whose ``files``
list every file written, with size and sha256) and ``MANIFEST.json`` (written last, :mod:`specs.manifest`),
and renames the staging directory into place. A crash leaves only a hidden temporary, never a directory that
looks complete; ``governance verify`` and ``specs.verify_manifest`` check the result like any checkpoint.

The target may be missing or an empty directory; with ``overwrite``, also a directory whose manifest lists
every file in it (one we wrote), which is moved aside, replaced and then removed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from torch import nn

from specs.card import FileRef, ModelCard
from specs.config_files import atomic_write_text, current_umask, dump_config, dumps_config
from specs.config_io import to_dict
from specs.manifest import MANIFEST_NAME, hash_file, listed_paths, write_manifest
from specs.model_config import ModelConfig
from specs.sizing import parameter_count

CONFIG_NAME = "config.json"
CARD_NAME = "modelcard.json"


@dataclass(frozen=True, kw_only=True, slots=True)
class CardFields:
    """What the caller knows about an export that the model does not: its name, lineage and use."""

    name: str | None = None
    model_version: str = "0.1.0"
    tokenizer: str | None = None
    parents: tuple[str, ...] = ()  # content ids of the checkpoints exported (their MANIFEST content_id)
    license: str = "unspecified"
    intended_use: str = "research"
    code_revision: str | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)
    extra: Callable[[Path], None] | None = None  # adds files (a tokenizer) to the directory being written


@dataclass(slots=True)
class Staging:
    """Where an exporter writes its files (``path``) and what it measured while doing so (``metrics``, into the
    card)."""

    path: Path
    metrics: dict[str, float] = field(default_factory=dict)


@contextlib.contextmanager
def export_directory(
    out: str | os.PathLike[str], cfg: ModelConfig, *, kind: str, dtype: str, card: CardFields | None = None,
    overwrite: bool = False,
) -> Iterator[Staging]:
    """Yield a staging directory to write an export's files into; on a clean exit, add the config, card and
    manifest and publish it at ``out``. ``kind`` (``onnx``, ``pt2``, ``int8``) goes into the card's name and
    limitations line; the metrics the exporter records are merged over the caller's."""
    target = Path(out)
    _check_target(target, overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Staging(staging_dir(target))
    staging = work.path
    try:
        yield work
        dump_config(cfg, staging / CONFIG_NAME)
        fields = card or CardFields()
        if fields.extra is not None:
            fields.extra(staging)
        refs = file_refs(staging)
        model_card = ModelCard(
            name=fields.name or f"{cfg.name or cfg.architecture}-{kind}",
            model_version=fields.model_version, architecture=cfg.architecture, config=to_dict(cfg),
            parameters=parameter_count(cfg), dtype=dtype, tokenizer=fields.tokenizer,
            metrics={**fields.metrics, **work.metrics}, intended_use=fields.intended_use,
            limitations=f"{kind} export of the checkpoint named in parents; see the export plane's README",
            license=fields.license, code_revision=fields.code_revision, parents=fields.parents,
            created_at=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), files=tuple(refs),
        )
        atomic_write_text(staging / CARD_NAME, dumps_config(model_card, "json"))
        write_manifest(staging, known={ref.path: (ref.size, ref.sha256) for ref in refs})
        _publish(staging, target, overwrite)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def staging_dir(target: Path) -> Path:
    """A fresh hidden directory beside ``target`` (``.NAME.tmp-*``), with the permissions a new directory gets
    (``mkdtemp`` makes it 0700, which the published directory would keep)."""
    path = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    path.chmod(0o777 & ~current_umask())
    return path


def file_refs(root: Path) -> list[FileRef]:
    """Every file under ``root`` (sorted POSIX relative paths), with size and sha256, the card and manifest
    left out (the card cannot hash itself; the manifest is written after it)."""
    refs = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel not in (CARD_NAME, MANIFEST_NAME):
            size, sha = hash_file(path)
            refs.append(FileRef(path=rel, size=size, sha256=sha))
    return refs


def weights_dtype(module: nn.Module) -> str:
    """The dtype holding most of a module's floating parameter and buffer elements (what its card says)."""
    counts: dict[str, int] = {}
    for t in [*module.parameters(), *module.buffers()]:
        name = str(t.dtype).removeprefix("torch.")
        counts[name] = counts.get(name, 0) + t.numel()
    return max(counts, key=lambda k: counts[k]) if counts else "float32"


def _check_target(target: Path, overwrite: bool) -> None:
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise FileExistsError(f"{target}: exists and is not a directory; choose another --out")
    if not target.exists() or not any(target.iterdir()):
        return
    ours = listed_paths(target)
    present = {p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file()}
    if ours is None or not present <= ours:
        raise FileExistsError(f"{target}: a directory holding other files; exports go to a new or empty directory")
    if not overwrite:
        raise FileExistsError(f"{target}: already holds an export; pass overwrite (--overwrite) to replace it")


def _publish(staging: Path, target: Path, overwrite: bool) -> None:
    """Rename ``staging`` to ``target``; an existing target (checked again: it may have changed meanwhile) is
    moved aside first and removed after."""
    _check_target(target, overwrite)
    if target.exists():
        aside = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        os.replace(target, aside / target.name)
        os.replace(staging, target)
        shutil.rmtree(aside)
    else:
        os.replace(staging, target)
