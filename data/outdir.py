"""Write a build into place atomically, and never delete a file the build did not write.

A build is written into a hidden ``.NAME.tmp-*`` folder beside the output folder and renamed into place
once complete, so a killed build leaves that hidden folder and nothing at the output path that looks
finished. An existing output folder is used only if it is empty, or, with ``overwrite``, if it holds a
previous build and nothing else (every file in it is listed in its manifest): that build is moved aside,
the new one renamed into place, and only then the old one deleted. Anything else in the way is an error
that names the files, which stay where they are.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from data.errors import DataError
from data.manifest import MANIFEST_FILE, read_manifest, written_files
from specs.config_files import current_umask


def _files_of_previous_build(outdir: Path) -> set[Path]:
    """The files a previous build in ``outdir`` wrote: its manifest and what the manifest lists (none without
    a manifest; a manifest that cannot be read proves nothing, so it is an error)."""
    if not (outdir / MANIFEST_FILE).is_file():
        return set()
    try:
        manifest = read_manifest(outdir)
    except DataError as exc:
        raise DataError(f"{outdir} holds a {MANIFEST_FILE} this version cannot read, so its files are not "
                        f"known to be a previous build's; move the folder away or choose another ({exc})") from exc
    return {outdir / MANIFEST_FILE, *(outdir / name for name in written_files(manifest))}


def check_outdir(outdir: Path, *, overwrite: bool) -> None:
    """Raise unless a build may be written to ``outdir`` (called before the work starts, and again at the end)."""
    if outdir.exists() and not outdir.is_dir():
        raise DataError(f"{outdir} exists and is not a folder")
    present = set(outdir.rglob("*")) if outdir.is_dir() else set()  # builds are flat: any folder is foreign
    if not present:
        return
    if not overwrite:
        raise DataError(f"{outdir} is not empty; pass --overwrite to replace a previous build there")
    foreign = sorted(str(p.relative_to(outdir)) for p in present - _files_of_previous_build(outdir))
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise DataError(
            f"{outdir} holds files this build did not write ({shown}); they are never deleted: "
            "choose another output folder or move them"
        )


@contextlib.contextmanager
def staged_outdir(outdir: str | os.PathLike[str], *, overwrite: bool) -> Iterator[Path]:
    """Yield a hidden staging folder beside ``outdir``; on a clean exit it replaces ``outdir``."""
    final = Path(outdir)
    check_outdir(final, overwrite=overwrite)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield staging
        _flush_and_open_up(staging)
        check_outdir(final, overwrite=overwrite)  # something may have appeared there while we worked
        _replace(final, staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _replace(final: Path, staging: Path) -> None:
    if not final.is_dir() or not any(final.iterdir()):
        os.replace(staging, final)  # a rename onto an empty folder replaces it
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
    os.replace(final, aside / final.name)
    try:
        os.replace(staging, final)
    except BaseException:
        os.replace(aside / final.name, final)
        aside.rmdir()
        raise
    shutil.rmtree(aside)  # only the previous build's own files, checked by check_outdir


def _flush_and_open_up(root: Path) -> None:
    """fsync every file before the rename publishes it, and give the folder the permissions a plain ``mkdir``
    would (``mkdtemp`` makes it private)."""
    for path in root.iterdir():
        with open(path, "rb") as fh:
            os.fsync(fh.fileno())
    root.chmod(0o777 & ~current_umask())
