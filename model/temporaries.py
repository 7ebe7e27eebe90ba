"""The hidden directories a write leaves beside its target, who owns them, and cleaning up after dead owners.

A write of ``DIR/NAME`` stages in ``DIR/.NAME.tmp-XXXXXXXX`` and, where it cannot swap atomically, moves the
old target aside to ``DIR/.NAME.old-XXXXXXXX`` (``XXXXXXXX``: ``tempfile.mkdtemp``'s eight characters). The
writer holds an exclusive ``flock`` on each of them through an open directory fd for as long as it lives. The
kernel drops such a lock when the process dies, even by SIGKILL, and PIDs play no part, so "unowned" means
exactly "its writer is gone". flock locks belong to an open file description: a second ``open`` in the same
process conflicts like another process would, so threads are covered too.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)


def clean_stale_temporaries(target: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporaries of ``target`` (``.NAME.tmp-*``, ``.NAME.old-*`` beside it) that no live process
    owns, and return their paths. If ``target`` is missing and the newest unowned ``.NAME.old-*`` holds the
    directory a replacement moved aside before it was killed, it is renamed back first. Both are logged as
    warnings. Nothing else is touched: not other targets' temporaries, nor names that only resemble the pattern.
    """
    given = Path(target)
    return clean(Path(os.path.realpath(given.parent)) / given.name, os.fspath(target))


def clean(final: Path, shown: str) -> list[Path]:
    """:func:`clean_stale_temporaries` of the resolved path ``final``, naming it ``shown`` in the log."""
    found = temporaries(final)
    if not os.path.lexists(final):
        restored = _restore_moved_aside(final, shown, [p for p, kind in found if kind == "old"])
        found = [(p, kind) for p, kind in found if p != restored]
    removed = []
    for candidate, _ in found:
        fd = try_lock(candidate)
        if fd is None:  # a live writer owns it, or it is gone already
            continue
        try:
            shutil.rmtree(candidate)
            removed.append(candidate)
        except OSError as exc:  # cleaning up is a courtesy; it never stops the write that asked for it
            log.warning("could not remove stale temporary %s: %s", candidate, exc)
        finally:
            os.close(fd)
    if removed:
        log.warning(
            "removed %d stale temporar%s of %s left by interrupted writes: %s",
            len(removed),
            "y" if len(removed) == 1 else "ies",
            shown,
            ", ".join(p.name for p in removed),
        )
    return removed


def temporaries(final: Path) -> list[tuple[Path, str]]:
    """``(path, "tmp" | "old")`` for every real directory beside ``final`` named like one of its temporaries."""
    pattern = re.compile(rf"\.{re.escape(final.name)}\.(tmp|old)-[a-z0-9_]{{8}}")
    try:
        entries = list(os.scandir(final.parent))
    except FileNotFoundError:
        return []
    return [(Path(e.path), m[1]) for e in entries if (m := pattern.fullmatch(e.name)) and e.is_dir(follow_symlinks=False)]


def locked_temporary(final: Path, kind: str) -> tuple[Path, int]:
    """A new ``.NAME.KIND-*`` directory beside ``final`` and an fd holding its lock.

    Between ``mkdtemp`` and the lock the directory is unowned, and a cleaner may remove it; so the lock is
    taken on whatever is at that name (checked to be a directory we can lock), and the attempt repeated if
    nothing is there any more."""
    for _ in range(100):
        path = Path(tempfile.mkdtemp(prefix=f".{final.name}.{kind}-", dir=final.parent))
        fd = try_lock(path)
        if fd is not None:
            return path, fd
    raise OSError(f"could not create and lock a temporary directory beside {final}")


def try_lock(path: Path) -> int | None:
    """An fd holding an exclusive flock on the directory now at ``path``; None if a live process holds one, or
    nothing (or not a real directory) is there."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
            return None
        raise
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # The name may have moved on between open and flock (removed, or swapped by a writer).
        if os.path.samestat(os.fstat(fd), os.lstat(path)):
            return fd
    except (BlockingIOError, FileNotFoundError):
        pass
    os.close(fd)
    return None


def held_by_a_live_writer(final: Path) -> bool:
    """Whether a live writer holds a ``.NAME.old-*`` of ``final``: it has moved the target aside for a moment."""
    for path, kind in temporaries(final):
        if kind == "old":
            fd = try_lock(path)
            if fd is not None:
                os.close(fd)
            elif os.path.lexists(path):
                return True
    return False


def _restore_moved_aside(final: Path, shown: str, olds: list[Path]) -> Path | None:
    """Put back the newest ``.NAME.old-*`` when a replacement died between its two renames; return it."""
    if not olds:
        return None
    newest = max(olds, key=_ctime)  # rename sets ctime: the latest move aside
    fd = try_lock(newest)
    if fd is None:  # a live writer is between its renames: its target comes back in a moment
        return None
    try:
        os.rename(newest, final)
    except OSError:  # something took the name meanwhile; the old one stays a temporary
        return None
    finally:
        os.close(fd)
    log.warning("restored %s from %s, which an interrupted write had moved aside", shown, newest.name)
    return newest


def _ctime(path: Path) -> float:
    try:
        return path.lstat().st_ctime
    except FileNotFoundError:
        return 0.0
