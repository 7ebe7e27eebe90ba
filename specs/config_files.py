"""Config files: JSON/YAML load and dump (atomic), named presets, and ``dotted.key=value`` overrides."""

from __future__ import annotations

import difflib
import errno
import json
import os
import re
import tempfile
import typing
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml

from specs.config_io import config_kinds, from_dict, to_dict
from specs.errors import ConfigError

C = TypeVar("C")


class _YamlLoader(yaml.SafeLoader):
    """Safe YAML that also reads ``1e-5`` as a float (YAML 1.1 demands a dot: ``1.0e-5``)."""


class _YamlDumper(yaml.SafeDumper):
    """Safe YAML that quotes a string the loader would read as a float (``"1e3"`` in a stop list)."""


for _side in (_YamlLoader, _YamlDumper):
    _side.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
        list("-+0123456789"),
    )


def load_config(name_or_path: str | os.PathLike[str], *, kind: str | None = None) -> Any:
    """Load a config from a ``.json``/``.yaml`` path or a preset name (``specs/presets/KIND/NAME.yaml``; without
    ``kind``, a model preset when there is one of that name)."""
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
    data = _resolve_references(_parse(text, path.suffix, str(path)), kind, path.parent, str(path))
    return from_dict(data, kind=kind, source=str(path))


def load_preset(name: str, *, kind: str | None = None) -> Any:
    """Load a named preset of ``kind`` (default: the model preset of that name, else the one kind that has it);
    an unknown name lists the close matches but never resolves to one."""
    kinds = [kind] if kind is not None else sorted(preset_kinds(), key=lambda k: (k != "model", k))
    found = [k for k in kinds if name in preset_names(k)]
    if not found:
        elsewhere = [k for k in preset_kinds() if name in preset_names(k)]
        if elsewhere:
            raise ConfigError([("", f"{name!r} is a {' and a '.join(elsewhere)} preset, not a {kind} preset")])
        names = sorted({n for k in kinds for n in preset_names(k)})
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(map(repr, close))}?" if close else f"available: {', '.join(names)}"
        what = f"{kind} preset" if kind is not None else "preset"
        raise ConfigError([("", f"unknown {what} {name!r} (and no such file); {hint}")])
    source = f"preset {name}" if found[0] == "model" else f"{found[0]} preset {name}"
    text = resources.files("specs.presets").joinpath(found[0]).joinpath(f"{name}.yaml").read_text(encoding="utf-8")
    data = _resolve_references(_parse(text, ".yaml", source), found[0], None, source)
    return from_dict(data, kind=found[0], source=source)


def preset_kinds() -> list[str]:
    """The config kinds that have presets (a folder of ``specs/presets`` each)."""
    return sorted(p.name for p in resources.files("specs.presets").iterdir() if p.is_dir() and not p.name.startswith("_"))


def preset_names(kind: str = "model") -> list[str]:
    """Names of the presets of ``kind`` shipped in ``specs/presets/KIND``."""
    folder = resources.files("specs.presets").joinpath(kind)
    if not folder.is_dir():
        return []
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))


def _resolve_references(data: Any, kind: str | None, base: Path | None, source: str) -> Any:
    """A field whose type is another config kind may name it (a preset, or a file relative to ``base``) instead
    of spelling it out; replace each such name with the config it names, so what gets validated is complete."""
    kind = kind or (data.get("kind") if isinstance(data, dict) else None)
    if not isinstance(data, dict) or kind not in config_kinds():
        return data
    data = dict(data)
    for field_name, field_type in typing.get_type_hints(config_kinds()[kind]).items():
        nested_kind = getattr(field_type, "KIND", None)
        value = data.get(field_name)
        if nested_kind is None or not isinstance(value, str):
            continue
        target = base / value if base is not None and Path(value).suffix in (".json", ".yaml", ".yml") else value
        try:
            data[field_name] = to_dict(load_config(target, kind=nested_kind))
        except ConfigError as exc:
            raise ConfigError([(f"{field_name}{'.' + p if p else ''}", r) for p, r in exc.problems], source) from None
    return data


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
        return yaml.dump(data, Dumper=_YamlDumper, sort_keys=False)
    raise ValueError(f"unknown config format {fmt!r}; use 'json' or 'yaml'")


def dump_config(cfg: Any, path: str | os.PathLike[str]) -> Path:
    """Write a config to ``path`` (format by suffix), atomically: a crash never leaves half a file. The folder
    must exist (:func:`atomic_write_text`)."""
    path = Path(path)
    fmt = {".json": "json", ".yaml": "yaml", ".yml": "yaml"}.get(path.suffix)
    if fmt is None:
        raise ValueError(f"cannot tell the config format of {path}: use a .json, .yaml or .yml suffix")
    atomic_write_text(path, dumps_config(cfg, fmt))
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, fsync it, then rename it into place.

    The folder must exist: a missing one is an error naming it, never created (a mistyped ``-o`` must not
    scatter folders). Any ``OSError`` names ``path``, not the temporary file, and chains the original.
    """
    path = Path(path)
    folder = path.parent
    if not folder.is_dir():
        missing = not folder.exists()
        problem = f"folder {folder} does not exist" if missing else f"{folder} is not a folder"
        raise OSError(errno.ENOENT if missing else errno.ENOTDIR, f"could not write {path}: {problem}")
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600; a config is as readable as any new file
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise reworded_os_error(exc, f"could not write {path}") from exc
        raise


def reworded_os_error(exc: OSError, message: str) -> OSError:
    """``exc`` as ``OSError("MESSAGE: REASON")`` with the same errno (hence the same subclass, e.g.
    ``PermissionError``). REASON is the innermost OSError's in the ``raise ... from`` chain, so a message that
    names a temporary path is replaced, not nested, when a caller rewords an already reworded error."""
    inner = exc
    while isinstance(inner.__cause__, OSError):
        inner = inner.__cause__
    reason = inner.strerror or str(inner)
    code = inner.errno if isinstance(inner.errno, int) else exc.errno
    return OSError(code, f"{message}: {reason}") if isinstance(code, int) else OSError(f"{message}: {reason}")


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
