"""Atomic directory writes: build a directory under a hidden temporary name beside its target, then publish it.

Contract of :func:`atomic_directory` (used by ``save_checkpoint`` and ``to_hf``):

- What it may replace is decided by :mod:`model.target_rules`: a missing path, an empty directory, or (with
  ``overwrite``) a checkpoint of the writer's own kind holding nothing else. Anything else raises
  :class:`RefusedTarget` (a ``FileExistsError``), before a byte is written and again just before publishing.
- At every instant the target is the complete old directory or the complete new one. On Linux the two are
  swapped in one ``renameat2(RENAME_EXCHANGE)`` (:mod:`model.exchange`); elsewhere, or on a filesystem
  without it, the old one is renamed aside to ``.NAME.old-*`` and the new one renamed in, and a later cleanup
  puts the old one back if the process died between the two renames. A missing or empty target is a single
  ``rename``.
- A writer owns its temporaries through ``flock`` (:mod:`model.temporaries`): its staging directory for its
  whole life, and the old target from just before it is moved until it is deleted. Every write first runs
  :func:`clean_stale_temporaries` on its target, which removes what no live process owns and logs a warning.
- The target is inspected with its directory locked, so that a concurrent writer of the same target cannot
  swap it in the middle of the inspection; such writers take turns (a user adding files meanwhile is not
  stopped by a lock, only by the check that runs just before the swap).
- An ``OSError`` while writing is re-raised naming the user's path ("could not write checkpoint ckpt:
  No space left on device"), chained to the original.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from model.exchange import exchange
from model.target_rules import LMPLANES, CheckpointKind, RefusedTarget, inspect_target, resolve_target
from model.temporaries import clean, clean_stale_temporaries, held_by_a_live_writer, locked_temporary, try_lock
from specs.config_files import current_umask, reworded_os_error

__all__ = ["RefusedTarget", "atomic_directory", "clean_stale_temporaries"]

log = logging.getLogger(__name__)
_WAIT_S = 30.0  # how long a writer waits for another writer of the same target to finish publishing


@contextlib.contextmanager
def atomic_directory(
    path: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    kind: CheckpointKind = LMPLANES,
) -> Iterator[Path]:
    """Yield a fresh, locked staging directory; on a clean exit it replaces ``path`` atomically.

    Missing parent folders of ``path`` are created. ``kind`` says which existing directories are checkpoints
    this writer may replace.
    """
    shown = os.fspath(path)
    final = resolve_target(path)
    check = _Inspection(final, shown, overwrite, kind)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        clean(final, shown)
        _, fd = check.locked()
        if fd is not None:
            os.close(fd)
        staging, staging_fd = locked_temporary(final, "tmp")
    except RefusedTarget:
        raise
    except OSError as exc:
        raise reworded_os_error(exc, f"could not write checkpoint {shown}") from exc
    try:
        yield staging
        _prepare_to_publish(staging)
        _publish(staging, check)
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)  # our staging, or after an exchange the old target
        if isinstance(exc, OSError) and not isinstance(exc, RefusedTarget):
            raise reworded_os_error(exc, f"could not write checkpoint {shown}") from exc
        raise
    finally:
        os.close(staging_fd)


class _Inspection:
    """The target and the rules for it; :meth:`locked` inspects it while holding its lock."""

    def __init__(self, final: Path, shown: str, overwrite: bool, kind: CheckpointKind) -> None:
        self.final, self.shown, self.overwrite, self.kind = final, shown, overwrite, kind

    def state(self) -> str:
        return inspect_target(self.final, self.shown, overwrite=self.overwrite, kind=self.kind)

    def locked(self) -> tuple[str, int | None]:
        """The target's state, and an fd locking it when it is a directory (None when it is missing). Waits
        while another writer holds it: that writer is publishing and will let go in a moment."""
        deadline = time.monotonic() + _WAIT_S
        while True:
            fd = try_lock(self.final)
            if fd is not None:
                try:
                    return self.state(), fd
                except BaseException:
                    os.close(fd)
                    raise
            try:
                mode = os.lstat(self.final).st_mode
            except FileNotFoundError:
                if not held_by_a_live_writer(self.final):
                    return "missing", None
            else:
                if not stat.S_ISDIR(mode):  # a file or a symlink: refused, no lock needed to say so
                    return self.state(), None
            # A directory another writer holds (its contents may be mid-swap), or has moved aside.
            if time.monotonic() > deadline:
                raise BlockingIOError(errno.EAGAIN, f"another process has been replacing it for {_WAIT_S:g} s")
            time.sleep(0.02)


def _publish(staging: Path, check: _Inspection) -> None:
    final = check.final
    while True:
        state, old_fd = check.locked()
        if state == "checkpoint":
            assert old_fd is not None  # a checkpoint is a directory, and a directory is returned locked
            break
        try:
            os.rename(staging, final)  # replaces a missing or empty directory atomically, and nothing else
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
                raise
            continue  # something took the name since we looked: look again
        finally:
            if old_fd is not None:
                os.close(old_fd)
        _fsync_directory(final.parent)
        return
    try:
        if exchange(staging, final):
            old = staging
        else:
            old = _replace_in_two_renames(staging, final)
        _fsync_directory(final.parent)
        shutil.rmtree(old, ignore_errors=True)  # still locked by old_fd; if we die here, the next cleanup does it
    finally:
        os.close(old_fd)


def _replace_in_two_renames(staging: Path, final: Path) -> Path:
    """Without an atomic exchange: move the old target aside, then the new one in; return where the old is."""
    aside = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
    os.rename(final, aside)  # replaces the empty placeholder; our lock on the old target moves with it
    try:
        os.rename(staging, final)
    except BaseException:
        try:
            os.rename(aside, final)  # other writers wait while aside is locked; only a user can take the name
        except OSError:
            kept = final.with_name(f"{final.name}.previous-{aside.name[-8:]}")  # a name no cleaner removes
            os.rename(aside, kept)
            log.error("%s was taken while it was being replaced; its previous contents are in %s", final, kept)
        raise
    return aside


def _prepare_to_publish(root: Path) -> None:
    """Flush every file to disk before the rename publishes them, and give files and folders the permissions a
    plain ``open``/``mkdir`` would have (``mkdtemp`` makes 0700, and some writers, safetensors among them, 0600)."""
    umask = current_umask()
    for path in [root, *root.rglob("*")]:
        if path.is_dir():
            path.chmod(0o777 & ~umask)
        else:
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())
            path.chmod(0o666 & ~umask)


def _fsync_directory(path: Path) -> None:
    """Make a rename in ``path`` durable (a crash right after it could otherwise forget it)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
