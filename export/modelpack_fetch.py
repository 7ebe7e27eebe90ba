"""Getting a ModelPack: from a pack directory or an ``http(s)://`` base URL, through a local cache.

``load_from_modelpack(source)``:

1. reads ``modelpack.json`` from the source and checks it (:func:`export.modelpack.parse_manifest`: paths that
   would escape the target, a cid that is not its sha256's, ... are refused before anything is fetched);
2. brings each distinct blob into ``CACHE/blobs/<cid>`` once: a blob already there is not fetched again. A
   download goes to ``<cid>.partial`` and resumes where a cut connection left it (an HTTP ``Range`` request;
   a server that answers 200 instead of 206 is read from the start), with a few retries; the complete file is
   hashed and renamed into place only if its sha256 is the manifest's, else deleted with an error naming it;
3. assembles ``CACHE/packs/<cid of the manifest>/`` (the checkpoint's own file names, hard links to the blobs)
   and verifies every file's size and sha256 there, so a blob altered in the cache is caught too;
4. only then calls ``load`` on that directory (``model.load_checkpoint``, handed over by the caller: ``export``
   may not import ``model``), or reads the safetensors tensors itself.

``unpack(source, out)`` writes the verified files to a directory of your choice instead. The cache is
``$LMPLANES_MODELPACK_CACHE``, else ``~/.cache/lmplanes/modelpack``; concurrent fetches of the same blob by two
processes are not coordinated (each would write its own partial file over the other's).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, overload

from export.artifact import staging_dir
from export.cid import cid_from_sha256
from export.modelpack import BLOBS, PACK_MANIFEST, ModelPackError, PackFile, parse_manifest, place
from specs.manifest import hash_file

T = TypeVar("T")
_CHUNK = 1 << 20
_RETRYABLE = (OSError, http.client.HTTPException)  # a reset or cut connection, a timeout, a truncated body


def default_cache() -> Path:
    return Path(os.environ.get("LMPLANES_MODELPACK_CACHE") or Path.home() / ".cache" / "lmplanes" / "modelpack")


class _Source:
    """Where a pack is read from: a directory or an http(s) base URL."""

    def __init__(self, source: str | os.PathLike[str], timeout: float) -> None:
        text = os.fspath(source)
        self.url = text.rstrip("/") if text.startswith(("http://", "https://")) else None
        self.root = None if self.url else Path(text)
        self.timeout = timeout

    def __str__(self) -> str:
        return self.url or str(self.root)

    def manifest(self) -> bytes:
        if self.root is not None:
            path = self.root / PACK_MANIFEST
            if not path.is_file():
                raise ModelPackError(f"{self.root}: no {PACK_MANIFEST}; not a ModelPack directory")
            return path.read_bytes()
        try:
            with urllib.request.urlopen(f"{self.url}/{PACK_MANIFEST}", timeout=self.timeout) as resp:
                return bytes(resp.read())
        except urllib.error.HTTPError as exc:
            raise ModelPackError(f"{self.url}/{PACK_MANIFEST}: HTTP {exc.code} {exc.reason}") from None

    def fill(self, entry: PackFile, partial: Path) -> None:
        """Append to ``partial`` the bytes of ``entry``'s blob it does not hold yet (at most ``entry.size``)."""
        offset = partial.stat().st_size if partial.exists() else 0
        if offset >= entry.size:
            return
        if self.root is not None:
            with open(self.root / BLOBS / entry.cid, "rb") as src, open(partial, "ab") as dst:
                src.seek(offset)
                _copy(src, dst, entry.size - offset)
            return
        url = f"{self.url}/{BLOBS}/{entry.cid}"
        request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as resp:
                resumed = offset > 0 and resp.status == 206
                if resumed and not resp.headers.get("Content-Range", "").startswith(f"bytes {offset}-"):
                    raise ModelPackError(f"{url}: the server resumed at {resp.headers.get('Content-Range')!r}, "
                                         f"not at byte {offset}")
                with open(partial, "ab" if resumed else "wb") as dst:  # a 200 is the whole file: start over
                    _copy(resp, dst, entry.size - (offset if resumed else 0))
        except urllib.error.HTTPError as exc:
            raise ModelPackError(f"{url}: HTTP {exc.code} {exc.reason}") from None


def _copy(src: Any, dst: Any, limit: int) -> None:
    """Copy up to ``limit`` bytes; a source that ends early raises (so the caller resumes from what arrived)."""
    while limit > 0:
        chunk = src.read(min(_CHUNK, limit))
        if not chunk:
            raise ConnectionError(f"the transfer ended {limit} bytes early")
        dst.write(chunk)
        limit -= len(chunk)


def fetch(source: str | os.PathLike[str], *, cache_dir: str | os.PathLike[str] | None = None, retries: int = 3,
          timeout: float = 60.0) -> Path:
    """The verified checkout of the pack at ``source`` in the cache (see the module); fetches what is missing."""
    src = _Source(source, timeout)
    manifest = src.manifest()
    files = parse_manifest(manifest)
    cache = Path(cache_dir) if cache_dir is not None else default_cache()
    (cache / BLOBS).mkdir(parents=True, exist_ok=True)
    for entry in {f.cid: f for f in files}.values():
        _ensure_blob(src, entry, cache / BLOBS, retries)
    checkout = cache / "packs" / cid_from_sha256(hashlib.sha256(manifest).hexdigest())
    if not checkout.is_dir():
        _assemble(files, cache / BLOBS, checkout)
    problems = _verify(checkout, files)
    if problems:
        raise ModelPackError(problems)
    return checkout


def _ensure_blob(src: _Source, entry: PackFile, blobs: Path, retries: int) -> None:
    blob = blobs / entry.cid
    if blob.is_file():
        return  # fetched before; verified with the checkout
    partial = blobs / f"{entry.cid}.partial"
    failure: BaseException | None = None
    for _ in range(retries + 1):
        try:
            src.fill(entry, partial)
            failure = None
            break
        except _RETRYABLE as exc:
            failure = exc
    if failure is not None:
        raise ModelPackError(f"{entry.path}: fetching {src}/{BLOBS}/{entry.cid} failed after {retries} retries "
                             f"({failure}); run again to resume from byte {partial.stat().st_size}")
    size, sha = hash_file(partial)
    if (size, sha) != (entry.size, entry.sha256):
        partial.unlink()
        raise ModelPackError(f"{entry.path}: the fetched file has sha256 {sha} ({size} bytes), the manifest says "
                             f"{entry.sha256} ({entry.size} bytes); tampered or corrupted, discarded")
    os.replace(partial, blob)


def _assemble(files: list[PackFile], blobs: Path, checkout: Path) -> None:
    checkout.parent.mkdir(parents=True, exist_ok=True)
    staging = staging_dir(checkout)
    try:
        for entry in files:
            destination = place(staging, entry)
            destination.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(blobs / entry.cid, destination)
            except OSError:  # a file system without hard links
                shutil.copyfile(blobs / entry.cid, destination)
        os.replace(staging, checkout)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _verify(root: Path, files: list[PackFile]) -> list[str]:
    problems = []
    for entry in files:
        path = place(root, entry)
        if not path.is_file():
            problems.append(f"{entry.path}: missing from {root}")
            continue
        size, sha = hash_file(path)
        if (size, sha) != (entry.size, entry.sha256):
            problems.append(f"{entry.path}: sha256 {sha} ({size} bytes) in {root}, the manifest says {entry.sha256}; "
                            "altered after download (delete it from the cache to fetch it again)")
    return problems


def unpack(source: str | os.PathLike[str], out: str | os.PathLike[str], *,
           cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Write the pack's files, verified, to the directory ``out`` (missing or empty), atomically."""
    target = Path(out)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise FileExistsError(f"{target}: exists and is not an empty directory")
    checkout = fetch(source, cache_dir=cache_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = staging_dir(target)
    try:
        shutil.copytree(checkout, staging, dirs_exist_ok=True)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


@overload
def load_from_modelpack(source: str | os.PathLike[str], *, load: Callable[[Path], T],
                        cache_dir: str | os.PathLike[str] | None = None) -> T: ...


@overload
def load_from_modelpack(source: str | os.PathLike[str], *, load: None = None,
                        cache_dir: str | os.PathLike[str] | None = None) -> dict[str, Any]: ...


def load_from_modelpack(source: str | os.PathLike[str], *, load: Callable[[Path], Any] | None = None,
                        cache_dir: str | os.PathLike[str] | None = None) -> Any:
    """Fetch and verify the pack at ``source`` (a directory or an http(s) base URL), then ``load(directory)``
    (e.g. ``model.load_checkpoint``); without ``load``, the tensors of its ``*.safetensors`` files by name."""
    root = fetch(source, cache_dir=cache_dir)
    if load is not None:
        return load(root)
    from safetensors.torch import load_file

    tensors: dict[str, Any] = {}
    for path in sorted(root.rglob("*.safetensors")):
        tensors.update(load_file(str(path)))
    return tensors
