"""What every governance command shares: the artifact names, atomic writes and the user-error type.

An artifact is written to a temporary file beside its final name, flushed to disk and renamed into place, so
a crash or a kill never leaves a half-written file under a name that ``verify`` would read as complete.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from specs.config_files import current_umask

ARTIFACTS_DIR = "artifacts"  # release artifacts of DIR go to DIR/artifacts/
SBOM_CDX = "SBOM.cdx.json"
SBOM_SPDX = "SBOM.spdx.json"
CHECKSUMS = "CHECKSUMS.sha256"
SIGNATURE = "CHECKSUMS.sha256.sig"
PUBLIC_KEY = "ed25519.pub.pem"
MODEL_SIG = "model.sig"  # OpenSSF model-signing bundle (optional)
MODEL_SIG_KEY = "ecdsa.pub.pem"
RECEIPT = "RECEIPT.json"
LINEAGE = "LINEAGE.dot"
CARD_MD = "MODEL_CARD.md"
CARD_JSON = "MODEL_CARD.json"
MODELCARD = "modelcard.json"  # the checkpoint's own card (written by model)
MANIFEST = "MANIFEST.json"  # the checkpoint's manifest (specs.manifest)
CONFIG = "config.json"


class GovernanceError(Exception):
    """A user mistake or an unusable input: the command line prints it as one line and exits 1."""


def write_bytes(path: str | os.PathLike[str], data: bytes, *, mode: int | None = None) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file, fsync, rename); return the path.

    ``mode`` sets the permission bits exactly (``0o600`` for a private key: the temporary is created with them,
    so the key is never readable by others, not even for an instant); default: what the umask allows."""
    path = Path(path)
    if not path.parent.is_dir():
        raise GovernanceError(f"cannot write {path}: folder {path.parent} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)  # created 0600
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode if mode is not None else 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text(path: str | os.PathLike[str], text: str, *, mode: int | None = None) -> Path:
    """:func:`write_bytes` of UTF-8 text."""
    return write_bytes(path, text.encode("utf-8"), mode=mode)


def relative_inside(path: Path, root: Path) -> str:
    """``path`` as a POSIX path relative to ``root``; a :class:`GovernanceError` when it lies outside."""
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        raise GovernanceError(f"{path}: not inside {root}; checksummed files must lie under the root") from None


def read_artifact(path: Path, fmt: str, what: str) -> tuple[dict[str, Any] | None, list[str]]:
    """The JSON object in ``path`` when it is an lmplanes ``what`` whose ``format`` is ``fmt``; otherwise
    ``None`` and the one problem, as ``verify`` reports it."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, [f"{path.name}: missing"]
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, [f"{path.name}: not valid JSON ({exc})"]
    if not isinstance(data, dict) or data.get("format") != fmt:
        return None, [f"{path.name}: not an lmplanes {what} (format is not {fmt!r})"]
    return data, []
