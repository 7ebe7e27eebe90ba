"""The on-disk memory of ``"auto"``: which kernel won, per machine and shape bucket, kept across processes.

A new process would otherwise time every candidate again (and a resumed training run could pick another kernel
than the run it resumes). The file is a small JSON object, ``{"format": 1, "choices": {key: kernel name}}``,
at ``$LMPLANES_KERNEL_CACHE`` if set (``off`` disables it), else under the user's cache directory
(``$XDG_CACHE_HOME`` or ``~/.cache``) as ``lmplanes/auto_kernels.json``.

A key names the machine (device model, CPU threads, torch version), the shape bucket and the candidate set, so
a choice is reused only among the same capable kernels; registering a faster kernel changes the set and
triggers a new measurement. The file is only a hint: a corrupt or foreign file is ignored (and replaced on the
next write), an unwritable one is logged and skipped, and the registry checks a remembered name against the
call's capable kernels before using it. Writers merge under an exclusive lock and replace the file atomically,
so concurrent processes never leave it half-written.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch

log = logging.getLogger(__name__)

ENV = "LMPLANES_KERNEL_CACHE"
FORMAT = 1

try:
    import fcntl
except ImportError:  # Windows: no advisory lock; the atomic replace still keeps the file whole
    fcntl = None  # type: ignore[assignment]


def cache_path() -> Path | None:
    """Where the choices live, or None when the disk cache is off."""
    value = os.environ.get(ENV)
    if value is not None:
        return None if value.strip().lower() in ("", "off", "0") else Path(value).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "lmplanes" / "auto_kernels.json"


def choice_key(bucket: tuple, candidates: list[str], device: torch.device) -> str:
    machine = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.machine()} cpu"
    return json.dumps([machine, torch.get_num_threads(), torch.__version__, [str(x) for x in bucket],
                       sorted(candidates)])


def remembered(key: str) -> str | None:
    """The kernel stored for ``key``, if the cache is on and holds one."""
    path = cache_path()
    return None if path is None else _read(path).get(key)


def remember(key: str, name: str) -> None:
    """Store ``name`` for ``key`` (merged with what other processes wrote); failures are logged, never raised."""
    path = cache_path()
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with _locked(path):
            choices = _read(path)
            choices[key] = name
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    json.dump({"format": FORMAT, "choices": choices}, f, indent=1)
                os.replace(tmp, path)
            except BaseException:
                os.unlink(tmp)
                raise
    except OSError as exc:
        log.warning("cannot write the auto kernel cache %s: %s", path, exc)


def _read(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("ignoring the unreadable auto kernel cache %s: %s", path, exc)
        return {}
    choices = data.get("choices") if isinstance(data, dict) and data.get("format") == FORMAT else None
    if not isinstance(choices, dict):
        log.warning("ignoring the auto kernel cache %s: not a format-%d cache", path, FORMAT)
        return {}
    return {k: v for k, v in choices.items() if isinstance(k, str) and isinstance(v, str)}


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path``'s lock file, so that read-merge-write cycles of writers do not interleave."""
    if fcntl is None:
        yield
        return
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
