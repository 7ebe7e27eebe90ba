"""The installed Python environment as data: every distribution with its version, licence, purl, RECORD hash
and the installed distributions it requires (from ``importlib.metadata``; no pip, no network).

A wheel's own hash is not kept by the installer, so a package's hash is the sha256 of its installed
``RECORD``, the file that lists the sha256 of every file the package installed: it pins the installed bytes
as well, and is said so in the SBOMs (``lmplanes:hash-of``).
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import re
from collections.abc import Collection
from dataclasses import dataclass
from functools import cache
from typing import Any

from license_expression import get_spdx_licensing
from packageurl import PackageURL
from packaging.requirements import InvalidRequirement, Requirement

_CLASSIFIER = "License :: "


@dataclass(frozen=True, kw_only=True, slots=True)
class Package:
    name: str  # as the distribution spells it
    key: str  # normalised (PEP 503), for matching requirements
    version: str
    spdx_license: str | None  # a valid SPDX expression, when the metadata gives one
    license_name: str | None  # otherwise the licence as the metadata names it (free text)
    record_sha256: str | None
    requires: tuple[str, ...]  # keys of the installed distributions this one requires (markers evaluated)

    @property
    def purl(self) -> str:
        return PackageURL(type="pypi", name=self.key, version=self.version).to_string()


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@cache
def installed_packages() -> tuple[Package, ...]:
    """Every distribution importable in this interpreter, sorted by key (the first of duplicates wins, as
    ``importlib`` resolves imports). Read once per process: the environment does not change under a release."""
    found: dict[str, tuple[md.Distribution, Any]] = {}
    for dist in md.distributions():
        meta: Any = dist.metadata  # parsed on every access: keep it
        name = meta.get("Name")
        if name and normalise(name) not in found:
            found[normalise(name)] = dist, meta
    packages = []
    for key, (dist, meta) in sorted(found.items()):
        spdx, free = _licence(meta)
        packages.append(Package(
            name=meta["Name"], key=key, version=meta["Version"], spdx_license=spdx, license_name=free,
            record_sha256=_record_sha256(dist), requires=_requires(meta, found.keys()),
        ))
    return tuple(packages)


def _licence(meta: Any) -> tuple[str | None, str | None]:
    for text in (meta.get("License-Expression"), meta.get("License")):
        if text and "\n" not in text.strip() and valid_spdx(text.strip()):
            return text.strip(), None
    classifiers = [c.split(" :: ")[-1] for c in meta.get_all("Classifier") or [] if c.startswith(_CLASSIFIER)]
    if classifiers:
        return None, " / ".join(classifiers)
    text = (meta.get("License-Expression") or meta.get("License") or "").strip()
    return None, (text.splitlines()[0][:120] if text and text.upper() != "UNKNOWN" else None)


@cache
def _spdx_licensing() -> Any:
    return get_spdx_licensing()  # builds an index of every SPDX id: a second or so, so once per process


@cache
def valid_spdx(expression: str) -> bool:
    """Whether ``expression`` is a valid SPDX licence expression made of known licence ids."""
    try:
        return not _spdx_licensing().validate(expression, strict=True).errors
    except Exception:  # the parser raises its own error types for malformed expressions
        return False


def _record_sha256(dist: md.Distribution) -> str | None:
    text = dist.read_text("RECORD")
    return None if text is None else hashlib.sha256(text.encode("utf-8")).hexdigest()


def _requires(meta: Any, installed: Collection[str]) -> tuple[str, ...]:
    keys = set()
    for line in meta.get_all("Requires-Dist") or []:
        try:
            req = Requirement(line)
        except InvalidRequirement:
            continue
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue  # an optional extra, or a marker for another platform
        key = normalise(req.name)
        if key in installed:
            keys.add(key)
    return tuple(sorted(keys))
