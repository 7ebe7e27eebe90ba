"""build_corpus: manifest, splits, documents, EOS, dtypes, dedup/PII stats, and how it treats the output folder."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import data
from data.build import token_dtype
from data.manifest import written_files
from tests.data.conftest import numbered_documents, write_documents

ROOT = Path(__file__).resolve().parents[2]


def _manifest(outdir: Path) -> dict:
    return json.loads((outdir / "manifest.json").read_text())


def _tokens(outdir: Path, split: str) -> np.ndarray:
    shards = data.TokenShards(outdir, split)
    return shards.read(0, len(shards))


def test_manifest_records_sources_files_and_counts(tmp_path: Path) -> None:
    files = write_documents(tmp_path / "in", numbered_documents(10))
    outdir = tmp_path / "out"
    manifest = data.build_corpus(
        [tmp_path / "in"], outdir, tokenizer="byte", shard_size_tokens=500, licenses=["CC0-1.0"], seed=3
    )
    assert manifest == _manifest(outdir)
    assert (manifest["format"], manifest["version"], manifest["dtype"]) == ("lmplanes-token-shards", 1, "uint16")
    assert [s["sha256"] for s in manifest["sources"]] == [hashlib.sha256(f.read_bytes()).hexdigest() for f in files]
    assert manifest["licenses"] == ["CC0-1.0"] and manifest["split"] == {"method": "document", "val_fraction": 0.1, "seed": 3}
    assert manifest["documents"] == {"read": 10, "kept": 10, "separator": None}
    assert manifest["tokenizer"]["kind"] == "byte" and manifest["eos_after_each_document"]
    total = sum(len(f.read_bytes()) + 1 for f in files)  # bytes + one EOS per document
    train, val = manifest["splits"]["train"], manifest["splits"]["val"]
    assert train["tokens"] + val["tokens"] == total and (train["documents"], val["documents"]) == (9, 1)
    assert all(s["tokens"] == 500 for s in train["shards"][:-1]) and len(train["shards"]) == -(-train["tokens"] // 500)
    records = written_files(manifest)
    assert sorted(records) == sorted(p.name for p in outdir.iterdir() if p.name != "manifest.json")
    for name, record in records.items():
        content = (outdir / name).read_bytes()
        assert (record["bytes"], record["sha256"]) == (len(content), hashlib.sha256(content).hexdigest())
    assert all(s["dtype"] == "uint16" and s["bytes"] == 2 * s["tokens"] for s in train["shards"])
    assert data.verify_build(outdir) == manifest


def test_documents_are_separated_by_eos_and_recorded(small_build: Callable[..., Path]) -> None:
    docs = ["alpha", "beta beta", "gamma"]
    outdir = small_build(docs, val_fraction=0.0)
    shards = data.TokenShards(outdir, "train")
    expected = [*b"alpha", 256, *b"beta beta", 256, *b"gamma", 256]
    assert shards.read(0, len(shards)).tolist() == expected
    assert shards.doc_starts.tolist() == [0, 6, 16]
    assert _manifest(outdir)["splits"]["val"]["tokens"] == 0


def test_document_split_is_seeded_and_keeps_input_order(small_build: Callable[..., Path]) -> None:
    docs = numbered_documents(20)

    def val_docs(seed: int) -> list[str]:
        shards = data.TokenShards(small_build(docs, seed=seed, val_fraction=0.25), "val")
        tok = shards.tokenizer()
        return tok.decode(shards.read(0, len(shards)).tolist(), skip_special_tokens=True).splitlines()

    first, again, other = val_docs(7), val_docs(7), val_docs(8)
    assert first == again != other and len(first) == 5
    assert first == sorted(first, key=lambda line: docs.index(line + "\n"))


def test_position_split_cuts_the_stream(small_build: Callable[..., Path]) -> None:
    outdir = small_build(["abcdefghij" * 10], tokenizer="char", split_by="auto")  # one document: by position
    assert _manifest(outdir)["split"]["method"] == "position"
    assert len(_tokens(outdir, "train")) == 90 and len(_tokens(outdir, "val")) == 10
    assert data.TokenShards(outdir, "val").doc_starts.tolist() == [0]  # the cut document continues


def test_doc_sep_splits_files_into_documents(small_build: Callable[..., Path]) -> None:
    outdir = small_build(["one\n\ntwo\n\n\n\nthree", "four"], doc_sep="\n\n", val_fraction=0.0)
    manifest = _manifest(outdir)
    assert manifest["documents"]["read"] == 4 and [s["documents"] for s in manifest["sources"]] == [3, 1]


def test_dedup_and_redaction_are_reported(small_build: Callable[..., Path]) -> None:
    docs = ["mail me at ann@example.com", "Mail me at ann@example.com", "call +1 415 555 2671", "plain text here"]
    outdir = small_build(docs, dedup=True, redact_pii=True, val_fraction=0.0)
    manifest = _manifest(outdir)
    assert manifest["dedup"]["exact_removed"] == 1 and manifest["dedup"]["near"]["jaccard_threshold"] == 0.8
    assert manifest["pii_redacted"] == {"email": 1, "card": 0, "ipv6": 0, "ipv4": 0, "phone": 1}
    text = data.TokenShards(outdir, "train").tokenizer().decode(_tokens(outdir, "train").tolist())
    assert "ann@example.com" not in text and "<EMAIL>" in text and "<PHONE>" in text


def test_bpe_tokenizer_is_trained_on_the_inputs_and_saved_beside(small_build: Callable[..., Path]) -> None:
    outdir = small_build(numbered_documents(30), tokenizer="bpe:300")
    tok = data.load_tokenizer(outdir)
    assert tok.kind == "bpe" and 257 < tok.vocab_size <= 300 and _manifest(outdir)["tokenizer"]["eos_id"] == tok.eos_id


def test_a_tokenizer_path_is_used_as_is(tmp_path: Path, small_build: Callable[..., Path]) -> None:
    data.char_tokenizer(["abc "]).save(tmp_path / "tok")
    outdir = small_build(["abc cab"], tokenizer=str(tmp_path / "tok"), val_fraction=0.0)
    assert _tokens(outdir, "train").tolist() == [1, 2, 3, 0, 3, 1, 2]  # sorted: " abc"


def test_token_dtype() -> None:
    assert token_dtype(65) == np.uint16 and token_dtype(65536) == np.uint16
    assert token_dtype(65537) == np.uint32 and token_dtype(100, "uint32") == np.uint32
    with pytest.raises(data.DataError, match="100,000 ids does not fit in uint16"):
        token_dtype(100_000, "uint16")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"tokenizer": "bpe:many"}, "bpe:VOCAB_SIZE needs a whole number"),
        ({"tokenizer": "words"}, "unknown tokenizer 'words'"),
        ({"val_fraction": 1.0}, "validation fraction must be at least 0 and below 1"),
        ({"split_by": "random"}, "unknown split method 'random'"),
        ({"shard_size_tokens": 0}, "shard size must be at least one token"),
        ({"doc_sep": ""}, "separator cannot be empty"),
    ],
)
def test_bad_options_are_clear_errors(small_build: Callable[..., Path], options: dict, message: str) -> None:
    with pytest.raises(data.DataError, match=message):
        small_build(**options)


def test_bad_inputs_are_clear_errors(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "blank.txt").write_text(" \n\n ")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    cases = [
        ([tmp_path / "nope.txt"], "nope.txt: no such file or folder"),
        ([tmp_path / "empty"], "the folder holds no files"),
        ([tmp_path / "blank.txt"], "the inputs hold no text"),
        ([tmp_path / "latin1.txt"], r"latin1.txt: not UTF-8 text \(byte 3"),
        ([], "no input files given"),
    ]
    for inputs, message in cases:
        with pytest.raises(data.DataError, match=message):
            data.build_corpus(inputs, tmp_path / "out", tokenizer="byte")
        assert not (tmp_path / "out").exists()


def test_outdir_is_never_clobbered(tmp_path: Path, small_build: Callable[..., Path]) -> None:
    outdir = small_build()
    inputs = [tmp_path / "corpus-0"]
    with pytest.raises(data.DataError, match="is not empty; pass --overwrite"):
        data.build_corpus(inputs, outdir, tokenizer="byte")
    data.build_corpus(inputs, outdir, tokenizer="char", overwrite=True)  # replaces our own previous build
    assert _manifest(outdir)["tokenizer"]["kind"] == "char"
    (outdir / "notes.txt").write_text("mine")
    with pytest.raises(data.DataError, match=r"holds files this build did not write \(notes.txt\)"):
        data.build_corpus(inputs, outdir, tokenizer="byte", overwrite=True)
    assert (outdir / "notes.txt").read_text() == "mine" and _manifest(outdir)["tokenizer"]["kind"] == "char"
    (tmp_path / "empty-out").mkdir()
    data.build_corpus(inputs, tmp_path / "empty-out", tokenizer="byte")  # an empty folder is fine
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left behind


def test_a_failed_build_leaves_nothing_that_looks_complete(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_documents(tmp_path / "in", numbered_documents(5))

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # as if the build were stopped while writing shards

    monkeypatch.setattr("data.build.write_split", crash)
    with pytest.raises(KeyboardInterrupt):
        data.build_corpus([tmp_path / "in"], tmp_path / "out", tokenizer="byte")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_a_killed_build_leaves_only_a_hidden_staging_folder(tmp_path: Path) -> None:
    write_documents(tmp_path / "in", numbered_documents(5))
    code = (
        "import os, signal, data.build as b\n"
        "def die(*a, **k): os.kill(os.getpid(), signal.SIGKILL)\n"
        "b.write_split = die\n"
        "b.build_corpus(['in'], 'out', tokenizer='byte')\n"
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, timeout=120)
    assert done.returncode == -signal.SIGKILL
    leftovers = sorted(p.name for p in tmp_path.iterdir() if p.name != "in")
    assert len(leftovers) == 1 and leftovers[0].startswith(".out.tmp-")
    assert not (tmp_path / leftovers[0] / "manifest.json").exists()


def test_an_unreadable_previous_manifest_is_not_taken_as_proof_of_ownership(
    tmp_path: Path, small_build: Callable[..., Path]
) -> None:
    outdir = small_build()
    (outdir / "manifest.json").write_text('{"format": "something-else"}')
    with pytest.raises(data.DataError, match="holds a manifest.json this version cannot read"):
        data.build_corpus([tmp_path / "corpus-0"], outdir, tokenizer="byte", overwrite=True)
    assert (outdir / "train-00000.bin").is_file()
