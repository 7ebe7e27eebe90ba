"""ModelPack: CIDv1 test vectors, pack/unpack round trip, and loading over HTTP from a local server (127.0.0.1)
that serves ranges, cuts connections mid-file, ignores ranges, or serves a tampered shard."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import torch

import export
import model
from export.cid import cid_from_sha256, varint
from export.modelpack import ModelPackError
from tests.export.conftest import tiny_lm


def test_cid_test_vectors() -> None:
    import hashlib

    # "hello world" as one raw IPFS block (`ipfs add --raw-leaves --cid-version 1` prints this id)
    assert cid_from_sha256(hashlib.sha256(b"hello world").digest()) == (
        "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"
    )
    # the documented example of the ipfs-cid package (https://libraries.io/pypi/ipfs-cid)
    assert cid_from_sha256(hashlib.sha256(b"Hello world").hexdigest()) == (
        "bafkreide5semuafsnds3ugrvm6fbwuyw2ijpj43gwjdxemstjkfozi37hq"
    )
    # the unsigned-varint spec's examples (multiformats/unsigned-varint README)
    assert [varint(n) for n in (1, 127, 128, 255, 300, 16384)] == [
        b"\x01", b"\x7f", b"\x80\x01", b"\xff\x01", b"\xac\x02", b"\x80\x80\x01"
    ]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path]:
    lm = tiny_lm(seed=4)
    path = model.save_checkpoint(lm, tmp_path_factory.mktemp("ckpt") / "ckpt", max_shard_bytes=200_000)
    return lm, path


@pytest.fixture(scope="module")
def packed(checkpoint: tuple[torch.nn.Module, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pack") / "pack"
    export.pack(checkpoint[1], out)
    return out


def test_pack_lists_every_file_and_unpacks_byte_for_byte(
    checkpoint: tuple[torch.nn.Module, Path], packed: Path, tmp_path: Path
) -> None:
    _, ckpt = checkpoint
    files = json.loads((packed / "modelpack.json").read_text())["files"]
    shards = [f for f in files if f["path"].endswith(".safetensors")]
    assert len(shards) >= 2, "the checkpoint is sharded"
    assert {f["path"] for f in files} == {p.relative_to(ckpt).as_posix() for p in ckpt.rglob("*") if p.is_file()}
    for f in files:
        assert f["cid"] == cid_from_sha256(f["sha256"]) and (packed / "blobs" / f["cid"]).stat().st_size == f["size"]
    out = export.unpack(packed, tmp_path / "unpacked", cache_dir=tmp_path / "cache")
    for f in files:
        assert (out / f["path"]).read_bytes() == (ckpt / f["path"]).read_bytes()
    assert model.verify_checkpoint(out) == []


class Server:
    """A static file server for one folder that logs each request and can misbehave on purpose."""

    def __init__(self, root: Path, *, ranges: bool = True, cut: bool = False, tamper: str | None = None) -> None:
        self.root, self.ranges, self.cut, self.tamper = root, ranges, cut, tamper
        self.log: list[tuple[str, str | None]] = []
        self._cut_done: set[str] = set()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.serve(self)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def serve(self, handler: BaseHTTPRequestHandler) -> None:
        rel, wanted = handler.path.lstrip("/"), handler.headers.get("Range")
        self.log.append((rel, wanted))
        path = self.root / rel
        if not path.is_file():
            handler.send_error(404)
            return
        data = bytearray(path.read_bytes())
        if self.tamper is not None and rel == f"blobs/{self.tamper}":
            data[len(data) // 2] ^= 0x01
        start = int(wanted.removeprefix("bytes=").split("-")[0]) if wanted and self.ranges else 0
        body = bytes(data[start:])
        handler.send_response(206 if start else 200)
        handler.send_header("Content-Length", str(len(body)))
        if start:
            handler.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        handler.end_headers()
        if self.cut and rel.startswith("blobs/") and rel not in self._cut_done and len(body) > 1000:
            self._cut_done.add(rel)  # the first response of each blob stops half-way and drops the connection
            handler.wfile.write(body[: len(body) // 2])
            handler.close_connection = True
            return
        handler.wfile.write(body)

    def blob_requests(self) -> list[tuple[str, str | None]]:
        return [entry for entry in self.log if entry[0].startswith("blobs/")]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve(packed: Path) -> Iterator[Any]:
    servers: list[Server] = []

    def start(**options: Any) -> Server:
        servers.append(Server(packed, **options))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def _same_model(lm: torch.nn.Module, loaded: torch.nn.Module) -> None:
    ids = torch.randint(0, 256, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded(ids), lm(ids))


def test_load_over_http_downloads_each_shard_once(
    checkpoint: tuple[torch.nn.Module, Path], packed: Path, serve: Any, tmp_path: Path
) -> None:
    server = serve()
    loaded = export.load_from_modelpack(server.url, load=model.load_checkpoint, cache_dir=tmp_path)
    _same_model(checkpoint[0], loaded)
    n_blobs = len(list((packed / "blobs").iterdir()))
    assert len(server.blob_requests()) == n_blobs
    tensors = export.load_from_modelpack(server.url, cache_dir=tmp_path)  # second time: from the cache
    assert len(server.blob_requests()) == n_blobs
    assert torch.equal(tensors["tok_embeddings.weight"], checkpoint[0].tok_embeddings.weight)


@pytest.mark.parametrize("ranges", [True, False])
def test_a_cut_connection_is_resumed(
    checkpoint: tuple[torch.nn.Module, Path], serve: Any, tmp_path: Path, ranges: bool
) -> None:
    server = serve(cut=True, ranges=ranges)
    _same_model(checkpoint[0], export.load_from_modelpack(server.url, load=model.load_checkpoint, cache_dir=tmp_path))
    resumed = [(path, wanted) for path, wanted in server.blob_requests() if wanted]
    assert resumed, "every big blob was cut once, so some request asked for a range"
    for path, wanted in resumed:  # each resume asks from the byte where the cut left the partial file
        assert wanted == f"bytes={(server.root / path).stat().st_size // 2}-"
    assert not list(tmp_path.glob("blobs/*.partial"))


def test_a_tampered_shard_is_refused_before_any_tensor_is_read(
    packed: Path, serve: Any, tmp_path: Path
) -> None:
    files = json.loads((packed / "modelpack.json").read_text())["files"]
    shard = next(f for f in files if f["path"].endswith(".safetensors"))
    server = serve(tamper=shard["cid"])
    calls: list[Path] = []
    with pytest.raises(ModelPackError, match=rf"{shard['path']}: the fetched file has sha256 .* tampered"):
        export.load_from_modelpack(server.url, load=calls.append, cache_dir=tmp_path)
    assert calls == [] and not (tmp_path / "blobs" / shard["cid"]).exists() and not (tmp_path / "packs").exists()


def test_a_blob_altered_in_the_cache_is_caught(packed: Path, tmp_path: Path) -> None:
    root = export.fetch(packed, cache_dir=tmp_path)
    shard = next(root.glob("*.safetensors"))
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0x01
    shard.write_bytes(bytes(data))
    with pytest.raises(ModelPackError, match=rf"{shard.name}: sha256 .* altered after download"):
        export.fetch(packed, cache_dir=tmp_path)


@pytest.mark.parametrize("bad", ["../evil.txt", "/tmp/evil.txt", "a/../../evil.txt", "./x", "a\\..\\evil.txt", ""])
def test_paths_that_escape_the_target_are_refused(packed: Path, tmp_path: Path, bad: str) -> None:
    evil = tmp_path / "evil-pack"
    shutil.copytree(packed, evil)
    manifest = json.loads((evil / "modelpack.json").read_text())
    manifest["files"][0]["path"] = bad
    (evil / "modelpack.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelPackError, match="escapes the target directory"):
        export.unpack(evil, tmp_path / "out" / "inner", cache_dir=tmp_path / "cache")
    assert not (tmp_path / "out").exists() and not (tmp_path / "evil.txt").exists()
    assert not (tmp_path / "cache" / "blobs").exists() or not list((tmp_path / "cache" / "blobs").iterdir())


def test_a_cid_that_is_not_its_sha256_is_refused(packed: Path, tmp_path: Path) -> None:
    evil = tmp_path / "evil-pack"
    shutil.copytree(packed, evil)
    manifest = json.loads((evil / "modelpack.json").read_text())
    manifest["files"][0]["cid"] = "../../etc"
    (evil / "modelpack.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelPackError, match="is not the CIDv1 of its sha256"):
        export.fetch(evil, cache_dir=tmp_path / "cache")
