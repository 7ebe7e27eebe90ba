"""Versioned config machinery: a registry of config kinds, validation, migrations, JSON/YAML I/O.

Every config is a frozen, keyword-only dataclass registered with :func:`config_kind`. Its serialised form is
a mapping that starts with ``kind`` and ``version`` and then holds the fields. Loading a file migrates it
from the version it was written with to the current one (:func:`register_migration`), then validates it
with pydantic in strict JSON mode: unknown keys, wrong types and impossible combinations are reported with
their dotted field path, and a misspelt key comes with the closest valid name.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import re
import tempfile
import types
import typing
from collections.abc import Callable, Iterable
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import pydantic
import yaml

from specs.errors import ConfigError

C = TypeVar("C")
Migration = Callable[[dict[str, Any]], dict[str, Any]]

_KINDS: dict[str, type] = {}


class _YamlLoader(yaml.SafeLoader):
    """Safe YAML that also reads ``1e-5`` as a float (YAML 1.1 demands a dot: ``1.0e-5``)."""


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)
_MIGRATIONS: dict[tuple[str, int], Migration] = {}


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


def register_migration(kind: str, from_version: int) -> Callable[[Migration], Migration]:
    """Register ``fn`` as the step that turns a ``kind`` mapping of ``from_version`` into ``from_version + 1``.

    The mapping handed to ``fn`` holds the fields only (no ``kind``/``version``); ``fn`` returns a new one.
    """

    def register(fn: Migration) -> Migration:
        _MIGRATIONS[(kind, from_version)] = fn
        return fn

    return register


def config_kinds() -> dict[str, type]:
    """The registered config kinds and their current dataclasses."""
    return dict(_KINDS)


# ---------------------------------------------------------------------------------------------- to / from dicts


def to_dict(cfg: Any) -> dict[str, Any]:
    """Serialise a registered config to plain data: ``kind``, ``version``, then the fields."""
    cls = type(cfg)
    if cls not in _KINDS.values():
        raise TypeError(f"{cls.__qualname__} is not a registered config kind")
    return {"kind": cls.KIND, "version": cls.VERSION, **_plain(dataclasses.asdict(cfg))}


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def from_dict(data: dict[str, Any], *, kind: str | None = None, source: str | None = None) -> Any:
    """Migrate and validate a serialised config; ``kind`` (if given) must match the data's."""
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
    return _validate(cls, data, source)


_STRICT = pydantic.ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


@cache
def _adapter(cls: type) -> pydantic.TypeAdapter:
    _make_strict(cls)
    return pydantic.TypeAdapter(cls)


def _make_strict(cls: type) -> None:
    """Forbid unknown keys and type coercion in ``cls`` and every config nested in it.

    Strict mode in JSON validation still accepts objects for dataclasses, arrays for tuples and ints for floats.
    """
    cls.__pydantic_config__ = _STRICT
    for tp in typing.get_type_hints(cls).values():
        for arg in (tp, *typing.get_args(tp), *(a for t in typing.get_args(tp) for a in typing.get_args(t))):
            if dataclasses.is_dataclass(arg) and getattr(arg, "__pydantic_config__", None) is not _STRICT:
                _make_strict(arg)


def _validate(cls: type[C], data: dict[str, Any], source: str | None) -> C:
    try:
        return _adapter(cls).validate_json(json.dumps(data, default=_not_json))
    except pydantic.ValidationError as exc:
        raise ConfigError([_describe(cls, err) for err in exc.errors()], source) from None


def _not_json(value: Any) -> Any:
    """YAML can produce values JSON cannot hold (dates, sets); pass them on as text, which no field accepts
    where a date was not meant, so validation names the field."""
    return str(value)


def _describe(cls: type, err: Any) -> tuple[str, str]:
    loc = [str(part) for part in err["loc"] if not str(part).startswith("function-")]
    cause = (err.get("ctx") or {}).get("error")
    if isinstance(cause, FieldProblem):
        return ".".join([*loc, cause.field]), cause.reason
    if err["type"] == "unexpected_keyword_argument":
        owner = _class_at(cls, loc[:-1])
        names = [f.name for f in dataclasses.fields(owner)] if owner else []
        close = difflib.get_close_matches(loc[-1], names, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else (f"; valid keys: {', '.join(names)}" if names else "")
        return ".".join(loc), f"unknown key{hint}"
    if err["type"] in ("missing", "missing_argument"):
        return ".".join(loc), "required field is missing"
    msg = err["msg"].removeprefix("Value error, ")
    return ".".join(loc), f"{msg} (got {err['input']!r})" if "input" in err and err["type"] != "value_error" else msg


def _class_at(cls: type, path: list[str]) -> type | None:
    """The dataclass found by following ``path`` through nested config fields, if any."""
    for name in path:
        if name.isdigit():  # an entry of a tuple of configs
            continue
        hints = typing.get_type_hints(cls)
        if name not in hints:
            return None
        cls = _dataclass_in(hints[name])
        if cls is None:
            return None
    return cls


def _dataclass_in(tp: Any) -> type | None:
    if dataclasses.is_dataclass(tp):
        return tp
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) in (typing.Union, tuple, list):
        for arg in typing.get_args(tp):
            if dataclasses.is_dataclass(arg):
                return arg
    return None


# ------------------------------------------------------------------------------------------------- files, presets


def load_config(name_or_path: str | os.PathLike[str], *, kind: str | None = None) -> Any:
    """Load a config from a ``.json``/``.yaml`` path or a preset name (``specs/presets/NAME.yaml``)."""
    path = Path(name_or_path)
    looks_like_a_path = path.suffix in (".json", ".yaml", ".yml") or len(path.parts) > 1 or path.is_file()
    if not looks_like_a_path:
        return load_preset(str(name_or_path), kind=kind)  # a directory named like a preset does not hide it
    if path.is_dir():
        raise ConfigError([("", f"{path} is a directory, not a config file")])
    if not path.is_file():
        raise ConfigError([("", f"no such config file: {path}")])
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError([("", f"not UTF-8 text ({exc.reason} at byte {exc.start})")], str(path)) from None
    return from_dict(_parse(text, path.suffix, str(path)), kind=kind, source=str(path))


def load_preset(name: str, *, kind: str | None = None) -> Any:
    """Load a named preset; an unknown name lists the close matches but never resolves to one."""
    names = preset_names()
    if name not in names:
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(map(repr, close))}?" if close else f"available: {', '.join(names)}"
        raise ConfigError([("", f"unknown preset {name!r} (and no such file); {hint}")])
    text = resources.files("specs.presets").joinpath(f"{name}.yaml").read_text(encoding="utf-8")
    return from_dict(_parse(text, ".yaml", f"preset {name}"), kind=kind, source=f"preset {name}")


def preset_names() -> list[str]:
    """Names of the presets shipped in ``specs/presets``."""
    root = resources.files("specs.presets")
    return sorted(p.name.removesuffix(".yaml") for p in root.iterdir() if p.name.endswith(".yaml"))


def _parse(text: str, suffix: str, source: str) -> Any:
    try:
        return json.loads(text) if suffix == ".json" else yaml.load(text, Loader=_YamlLoader)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigError([("", f"not valid {'JSON' if suffix == '.json' else 'YAML'}: {exc}")], source) from None


def dumps_config(cfg: Any, fmt: str = "yaml") -> str:
    """Serialise a config to YAML or JSON text."""
    data = to_dict(cfg)
    if fmt == "json":
        return json.dumps(data, indent=2) + "\n"
    if fmt == "yaml":
        return yaml.safe_dump(data, sort_keys=False)
    raise ValueError(f"unknown config format {fmt!r}; use 'json' or 'yaml'")


def dump_config(cfg: Any, path: str | os.PathLike[str]) -> Path:
    """Write a config to ``path`` (format by suffix), atomically: a crash never leaves half a file."""
    path = Path(path)
    fmt = {".json": "json", ".yaml": "yaml", ".yml": "yaml"}.get(path.suffix)
    if fmt is None:
        raise ValueError(f"cannot tell the config format of {path}: use a .json, .yaml or .yml suffix")
    atomic_write_text(path, dumps_config(cfg, fmt))
    return path


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, fsync it, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600; a config is as readable as any new file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def current_umask() -> int:
    """The process umask (reading it means setting it, so it is set straight back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def apply_overrides(cfg: C, overrides: Iterable[str]) -> C:
    """Apply ``dotted.key=value`` overrides (values parsed as YAML) and re-validate the whole config."""
    data = to_dict(cfg)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError([("", f"override {item!r} is not of the form dotted.key=value")])
        node = data
        *parents, leaf = key.split(".")
        for i, part in enumerate(parents):
            if not isinstance(node.get(part), dict):
                raise ConfigError([(".".join(parents[: i + 1]), f"override {item!r} does not name a nested config")])
            node = node[part]
        if key in ("kind", "version"):
            raise ConfigError([(key, "is set by lmplanes, not by an override")])
        try:
            node[leaf] = yaml.load(raw, Loader=_YamlLoader)
        except yaml.YAMLError as exc:
            raise ConfigError([(key, f"value {raw!r} is not valid YAML: {exc}".replace("\n", " "))]) from None
    return from_dict(data)
