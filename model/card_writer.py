"""Build a :class:`specs.ModelCard` from a live model and the files of its checkpoint."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path

from torch import nn

from specs.card import DataRef, FileRef, ModelCard
from specs.config_io import to_dict
from specs.manifest import hash_file
from specs.model_config import ModelConfig
from specs.tensor_spec import dtype_name


def utc_now() -> str:
    """The current time as ISO 8601 UTC with a ``Z`` suffix, to the second."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def file_refs(directory: str | os.PathLike[str], paths: Iterable[str]) -> list[FileRef]:
    """:class:`FileRef` (size and sha256) for each relative POSIX path under ``directory``."""
    refs = []
    for rel in paths:
        size, sha = hash_file(Path(directory) / rel)
        refs.append(FileRef(path=rel, size=size, sha256=sha))
    return refs


def make_card(
    model: nn.Module,
    files: Iterable[FileRef],
    *,
    name: str | None = None,
    model_version: str = "0.1.0",
    tokenizer: str | None = None,
    parents: Iterable[str] = (),
    training_data: Iterable[DataRef] = (),
    metrics: dict[str, float] | None = None,
    code_revision: str | None = None,
    license: str = "unspecified",
    intended_use: str = "research",
    limitations: str = "",
) -> ModelCard:
    """A card for ``model`` (which must carry its ``ModelConfig`` as ``.config``).

    ``parameters`` counts tied weights once; ``dtype`` is the dtype holding most parameter elements.
    """
    cfg = getattr(model, "config", None)
    if not isinstance(cfg, ModelConfig):
        raise TypeError(f"{type(model).__name__} has no ModelConfig as .config; cannot describe it in a card")
    params = list(model.parameters())  # deduplicated by identity: tied weights appear once
    by_dtype: Counter[str] = Counter()
    for p in params:
        by_dtype[dtype_name(p)] += p.numel()
    return ModelCard(
        name=name or cfg.name or cfg.architecture,
        model_version=model_version,
        architecture=cfg.architecture,
        config=to_dict(cfg),
        parameters=sum(p.numel() for p in params),
        dtype=by_dtype.most_common(1)[0][0] if by_dtype else cfg.dtype,
        tokenizer=tokenizer,
        training_data=tuple(training_data),
        metrics=dict(metrics or {}),
        intended_use=intended_use,
        limitations=limitations,
        license=license,
        code_revision=code_revision,
        parents=tuple(parents),
        created_at=utc_now(),
        files=tuple(files),
    )
