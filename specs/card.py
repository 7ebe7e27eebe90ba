"""ModelCard: what a checkpoint is, where it came from and what it may be used for (``modelcard.json``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from specs.config_io import FieldProblem, config_kind

_HEX = set("0123456789abcdef")


def _check_sha256(owner: str, digest: str) -> None:
    if len(digest) != 64 or not set(digest) <= _HEX:
        raise FieldProblem("sha256", f"{owner}: not a lowercase hex sha256 digest: {digest!r}")


@dataclass(frozen=True, kw_only=True, slots=True)
class DataRef:
    """A training or evaluation data set, pinned by the sha256 of its content."""

    name: str
    uri: str
    sha256: str

    def __post_init__(self) -> None:
        _check_sha256(self.name, self.sha256)


@dataclass(frozen=True, kw_only=True, slots=True)
class FileRef:
    """A file of the checkpoint, relative to its directory."""

    path: str
    size: int
    sha256: str

    def __post_init__(self) -> None:
        _check_sha256(self.path, self.sha256)


@config_kind("modelcard", version=1)
@dataclass(frozen=True, kw_only=True, slots=True)
class ModelCard:
    KIND: ClassVar[str]  # set by config_kind
    VERSION: ClassVar[int]

    name: str
    model_version: str = "0.1.0"
    architecture: str
    config: dict[str, Any]  # the serialised ModelConfig, with its kind and version
    parameters: int
    dtype: str
    tokenizer: str | None = None
    training_data: tuple[DataRef, ...] = ()
    metrics: dict[str, float] = field(default_factory=dict)
    intended_use: str = "research"
    limitations: str = ""
    license: str = "unspecified"
    code_revision: str | None = None
    parents: tuple[str, ...] = ()  # content ids (MANIFEST sha256) of the checkpoints this one derives from
    created_at: str  # ISO 8601, UTC
    files: tuple[FileRef, ...] = ()

    def __post_init__(self) -> None:
        if self.parameters < 0:
            raise FieldProblem("parameters", f"must be >= 0, got {self.parameters}")
        if "kind" not in self.config or "version" not in self.config:
            raise FieldProblem("config", "must be a serialised config with its kind and version")
