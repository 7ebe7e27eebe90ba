"""Atomic directory writes: build a directory under a temporary name, then rename it into place.

A crash (or an exception) while writing leaves at most a hidden ``.NAME.tmp-*`` directory, never a
directory at the final path that looks complete. Replacing an existing directory moves it aside first and
deletes it only once the new one is in place.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from specs.config_files import current_umask


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike[str], *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary directory; on a clean exit it becomes ``path``."""
    final = Path(path)
    if final.exists() and not overwrite:
        raise FileExistsError(f"{final} already exists; pass overwrite=True to replace it")
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield staging
        _prepare_to_publish(staging)
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
            os.replace(final, old / final.name)
            try:
                os.replace(staging, final)
            except BaseException:
                os.replace(old / final.name, final)  # put the previous directory back
                shutil.rmtree(old, ignore_errors=True)
                raise
            shutil.rmtree(old)
        else:
            os.replace(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


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
