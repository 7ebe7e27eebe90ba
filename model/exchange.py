"""Swap two directory entries in one step: Linux ``renameat2(..., RENAME_EXCHANGE)``, reached through ctypes.

Python's ``os`` has no binding for it. glibc has exported ``renameat2`` since 2.28 and Linux has served it since
3.15 (ext4, xfs, btrfs, tmpfs, overlayfs...). Where the symbol, the system call or the filesystem's support is
missing, :func:`exchange` reports it by returning False and the caller falls back to two renames.
"""

from __future__ import annotations

import ctypes
import errno
import os
import sys
from typing import Any

_AT_FDCWD = -100
_RENAME_EXCHANGE = 1 << 1
_UNSUPPORTED = {errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP}


def _renameat2() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # no dynamic libc (static builds) or a libc older than glibc 2.28
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_RENAMEAT2 = _renameat2()


def exchange(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Atomically swap the entries at ``a`` and ``b`` (both must exist). True when swapped; False, with nothing
    changed, when this platform or filesystem cannot; any other failure raises ``OSError``."""
    if _RENAMEAT2 is None:
        return False
    if _RENAMEAT2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in _UNSUPPORTED:
        return False
    raise OSError(code, os.strerror(code), os.fspath(a), None, os.fspath(b))
