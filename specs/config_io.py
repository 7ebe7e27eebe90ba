"""Versioned config machinery: a registry of config kinds, migrations, validation, and plain-data conversion.

Every config is a frozen, keyword-only dataclass registered with :func:`config_kind`. Its serialised form is
a mapping that starts with ``kind`` and ``version`` and then holds the fields. Loading a file migrates it
from the version it was written with to the current one (:func:`register_migration`), then validates it
with pydantic in strict JSON mode: unknown keys, wrong types and impossible combinations are reported with
their dotted field path, and a misspelt key comes with the closest valid name. Files, presets and overrides
are in :mod:`specs.config_files`.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from collections.abc import Callable
from functools import cache
from typing import Any, TypeVar

import pydantic

from specs.errors import ConfigError

C = TypeVar("C")
Migration = Callable[[dict[str, Any]], dict[str, Any]]

_KINDS: dict[str, Any] = {}  # kind -> its config dataclass (carrying KIND and VERSION)
_MIGRATIONS: dict[tuple[str, int], Migration] = {}
_MOVED_KEYS: dict[tuple[str, int], dict[str, str]] = {}  # (kind, old version) -> {old key: new dotted path}


class FieldProblem(ValueError):
    """Raised from a config's ``__post_init__`` to blame one field for a cross-field rule."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


def config_kind(kind: str, version: int) -> Callable[[type[C]], type[C]]:
    """Register a dataclass as the current schema of ``kind`` at ``version``."""

    def register(cls: type[C]) -> type[C]:
        if kind in _KINDS:
            raise ValueError(f"config kind {kind!r} is already registered by {_KINDS[kind].__qualname__}")
        cls.KIND = kind  # type: ignore[attr-defined]
        cls.VERSION = version  # type: ignore[attr-defined]
        _KINDS[kind] = cls
        return cls

    return register


def register_migration(
    kind: str, from_version: int, *, moved: dict[str, str] | None = None
) -> Callable[[Migration], Migration]:
    """Register ``fn`` as the step that turns a ``kind`` mapping of ``from_version`` into ``from_version + 1``.

    The mapping handed to ``fn`` holds the fields only (no ``kind``/``version``); ``fn`` returns a new one.
    ``moved`` names the keys of the old version that live elsewhere now (``{"rope_theta": "rope.theta"}``), so
    a new-version file that still uses one is told so, rather than offered a wrong did-you-mean.
    """

    def register(fn: Migration) -> Migration:
        _MIGRATIONS[(kind, from_version)] = fn
        _MOVED_KEYS[(kind, from_version)] = dict(moved or {})
        return fn

    return register


def moved_key(kind: str, key: str) -> tuple[int, str] | None:
    """``(old version, new path)`` when ``key`` is a key of an older version of ``kind`` that has moved."""
    for (moved_kind, version), moved in sorted(_MOVED_KEYS.items()):
        if moved_kind == kind and key in moved:
            return version, moved[key]
    return None


def config_kinds() -> dict[str, Any]:
    """The registered config kinds and their current dataclasses."""
    return dict(_KINDS)


# ---------------------------------------------------------------------------------------------- to / from dicts


def to_dict(cfg: Any) -> dict[str, Any]:
    """Serialise a registered config to plain data: ``kind``, ``version``, then the fields. A nested config of
    another registered kind (a train config's model) keeps its own ``kind`` and ``version``, so it migrates on
    its own when its schema moves on."""
    cls = type(cfg)
    if cls not in _KINDS.values():
        raise TypeError(f"{cls.__qualname__} is not a registered config kind")
    return {"kind": cls.KIND, "version": cls.VERSION, **_fields(cfg)}


def _fields(obj: Any) -> dict[str, Any]:
    return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}


def _plain(value: Any) -> Any:
    if type(value) in _KINDS.values():
        return to_dict(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _fields(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def from_dict(data: dict[str, Any], *, kind: str | None = None, source: str | None = None) -> Any:
    """Migrate and validate a serialised config; ``kind`` (if given) must match the data's."""
    cls, fields = _migrated(data, kind, source)
    return _validate(cls, fields, source)


def _migrated(data: Any, kind: str | None, source: str | None, where: str = "") -> tuple[Any, dict[str, Any]]:
    """The config class and its fields at the current version (nested configs of other kinds included)."""
    try:
        cls, fields = _migrated_here(data, kind, source)
    except ConfigError as exc:
        if not where:
            raise
        raise ConfigError([(f"{where}.{p}" if p else where, r) for p, r in exc.problems], source) from None
    for name, field_type in typing.get_type_hints(cls).items():
        nested = getattr(field_type, "KIND", None)
        if nested is not None and isinstance(fields.get(name), dict):
            path = f"{where}.{name}" if where else name
            fields[name] = _migrated(fields[name], nested, source, path)[1]
    return cls, fields


def _migrated_here(data: Any, kind: str | None, source: str | None) -> tuple[Any, dict[str, Any]]:
    if not isinstance(data, dict):
        raise ConfigError([("", f"expected a mapping, got {type(data).__name__}")], source)
    data = dict(data)
    found_kind = data.pop("kind", None)
    version = data.pop("version", None)
    if found_kind is None:
        if kind is None:
            raise ConfigError([("kind", f"missing; one of {sorted(_KINDS)}")], source)
        found_kind = kind
    if found_kind not in _KINDS:
        raise ConfigError([("kind", f"unknown config kind {found_kind!r}; known: {sorted(_KINDS)}")], source)
    if kind is not None and found_kind != kind:
        raise ConfigError([("kind", f"expected a {kind!r} config, got {found_kind!r}")], source)
    cls = _KINDS[found_kind]
    if version is None:
        raise ConfigError([("version", f"missing; the current {found_kind!r} version is {cls.VERSION}")], source)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ConfigError([("version", f"must be a positive integer, got {version!r}")], source)
    if version > cls.VERSION:
        raise ConfigError(
            [("version", f"{version} is newer than this lmplanes understands ({cls.VERSION}); upgrade lmplanes")],
            source,
        )
    for step in range(version, cls.VERSION):
        migrate = _MIGRATIONS.get((found_kind, step))
        if migrate is None:
            raise ConfigError([("version", f"no migration registered from {found_kind} v{step} to v{step + 1}")], source)
        try:
            data = migrate(data)
        except FieldProblem as exc:
            raise ConfigError([(exc.field, exc.reason)], source) from None
    return cls, data


_STRICT = pydantic.ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


@cache
def _adapter(cls: Any) -> pydantic.TypeAdapter:
    _make_strict(cls)
    return pydantic.TypeAdapter(cls)


def _make_strict(cls: Any) -> None:
    """Forbid unknown keys and type coercion in ``cls`` and every config nested in it.

    Strict mode in JSON validation still accepts objects for dataclasses, arrays for tuples and ints for floats.
    """
    cls.__pydantic_config__ = _STRICT
    for tp in typing.get_type_hints(cls).values():
        for arg in (tp, *typing.get_args(tp), *(a for t in typing.get_args(tp) for a in typing.get_args(t))):
            if dataclasses.is_dataclass(arg) and getattr(arg, "__pydantic_config__", None) is not _STRICT:
                _make_strict(arg)


def _validate(cls: Any, data: dict[str, Any], source: str | None) -> Any:
    try:
        return _adapter(cls).validate_json(json.dumps(data, default=_not_json))
    except pydantic.ValidationError as exc:
        raise ConfigError([_describe(cls, err) for err in exc.errors()], source) from None


def _not_json(value: Any) -> Any:
    """YAML can produce values JSON cannot hold (dates, sets); pass them on as text, which no field accepts
    where a date was not meant, so validation names the field."""
    return str(value)


def _describe(cls: Any, err: Any) -> tuple[str, str]:
    loc = [str(part) for part in err["loc"] if not str(part).startswith("function-")]
    cause = (err.get("ctx") or {}).get("error")
    if isinstance(cause, FieldProblem):
        return ".".join([*loc, cause.field]), cause.reason
    if err["type"] == "unexpected_keyword_argument":
        old = moved_key(cls.KIND, ".".join(loc)) if hasattr(cls, "KIND") else None
        if old is not None:
            version, new_path = old
            return ".".join(loc), (
                f"unknown key; this looks like a version {version} key: set `version: {version}` (it is migrated "
                f"on load), or move it to `{new_path}`"
            )
        owner = _class_at(cls, loc[:-1])
        names = [f.name for f in dataclasses.fields(owner)] if owner else []
        close = difflib.get_close_matches(loc[-1], names, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else (f"; valid keys: {', '.join(names)}" if names else "")
        return ".".join(loc), f"unknown key{hint}"
    if err["type"] in ("missing", "missing_argument"):
        return ".".join(loc), "required field is missing"
    msg = err["msg"].removeprefix("Value error, ")
    return ".".join(loc), f"{msg} (got {err['input']!r})" if "input" in err and err["type"] != "value_error" else msg


def _class_at(cls: Any, path: list[str]) -> Any | None:
    """The dataclass found by following ``path`` through nested config fields, if any."""
    current: Any | None = cls
    for name in path:
        if name.isdigit():  # an entry of a tuple of configs
            continue
        hints = typing.get_type_hints(current)
        if name not in hints:
            return None
        current = _dataclass_in(hints[name])
        if current is None:
            return None
    return current


def _dataclass_in(tp: Any) -> Any | None:
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return tp
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) in (typing.Union, tuple, list):
        for arg in typing.get_args(tp):
            if isinstance(arg, type) and dataclasses.is_dataclass(arg):
                return arg
    return None
