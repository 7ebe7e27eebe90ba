"""The attention-kernel names a config may use, known without importing torch or the kernels.

Configs name kernels (``attention.kernel: sdpa``) and are validated where torch may be absent, so the names
live here: the kernels lmplanes ships, those that ``kernel.registry.register`` added in this process, and
those that installed plugins declare under the ``lmplanes.kernels`` entry-point group (read by name only,
never imported here).
"""

from __future__ import annotations

import difflib
import functools
from importlib import metadata

AUTO = "auto"
BUILTIN_KERNELS = ("manual", "sdpa")
ENTRY_POINT_GROUP = "lmplanes.kernels"

_registered: dict[str, None] = {}  # ordered set


def register_kernel_name(name: str) -> None:
    """Make ``name`` valid in configs (``kernel.registry.register`` calls this)."""
    _registered[name] = None


def forget_kernel_name(name: str) -> None:
    """Undo :func:`register_kernel_name` (built-in and plugin names stay known)."""
    _registered.pop(name, None)


@functools.cache
def _plugin_names() -> tuple[str, ...]:
    return tuple(ep.name for ep in metadata.entry_points(group=ENTRY_POINT_GROUP))


def known_kernel_names() -> list[str]:
    """Every kernel name a config may use besides ``"auto"``, without duplicates."""
    return list(dict.fromkeys([*BUILTIN_KERNELS, *_plugin_names(), *_registered]))


def kernel_name_problem(name: str) -> str | None:
    """Why ``name`` is not a usable kernel name (with the closest known name), or None when it is."""
    known = known_kernel_names()
    if name == AUTO or name in known:
        return None
    close = difflib.get_close_matches(name, [AUTO, *known], n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"unknown attention kernel {name!r}; {hint}known: {', '.join([AUTO, *known])}"
