"""``lmplanes data build|verify``: in-process through ``main``; errors are one line and exit 1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pack.cli import main


def error_line(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.startswith("lmplanes: error: ")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    text = "".join(f"Line {i}: to be or not to be, reply to bard{i % 7}@globe.example.\n\n" for i in range(60))
    (tmp_path / "plays.txt").write_text(text + "Line 0: to be or not to be, reply to bard0@globe.example.\n\n")
    return tmp_path / "plays.txt"


def test_build_and_verify(corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    outdir = tmp_path / "shards"
    argv = ["data", "build", "--input", str(corpus), "--outdir", str(outdir), "--tokenizer", "char",
            "--doc-sep", "\\n\\n", "--dedup", "--redact-pii", "--val-fraction", "0.2", "--split-by", "document",
            "--seed", "1", "--license", "CC0-1.0", "--shard-size-tokens", "1000", "--dtype", "uint32"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert f"wrote {outdir}: train" in captured.out and "uint32; char tokenizer" in captured.out
    assert "documents: 61 read, 60 kept; split by document" in captured.out
    assert "duplicates removed: 1 exact" in captured.out and "redacted: email 60" in captured.out
    assert "tokenising" in captured.err  # the progress bar goes to stderr
    manifest = json.loads((outdir / "manifest.json").read_text())
    assert manifest["licenses"] == ["CC0-1.0"] and manifest["documents"]["separator"] == "\n\n"
    assert manifest["splits"]["val"]["documents"] == 12

    assert main(["data", "verify", str(outdir)]) == 0
    count = len(list(outdir.iterdir())) - 1  # all but the manifest itself
    assert capsys.readouterr().out == f"ok: {outdir} ({count} files match the manifest)\n"

    (outdir / "train-00000.bin").write_bytes(b"\0\0\0\0")
    assert main(["data", "verify", str(outdir)]) == 1
    assert "train-00000.bin: 4 bytes, the manifest says 4000" in error_line(capsys.readouterr().err)


def test_build_refuses_an_existing_outdir(corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("keep me")
    for extra in ([], ["--overwrite"]):
        assert main(["data", "build", "--input", str(corpus), "--outdir", str(tmp_path / "out"), "--tokenizer",
                     "byte", *extra]) == 1
        assert "out" in error_line(capsys.readouterr().err)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["mine.txt"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--input", "missing.txt"], "missing.txt: no such file or folder"),
        (["--tokenizer", "bpe:x"], "bpe:VOCAB_SIZE needs a whole number"),
        (["--val-fraction", "1.5"], "validation fraction must be at least 0 and below 1"),
    ],
)
def test_build_errors_are_one_line(
    corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    argv = ["data", "build", "--input", str(corpus), "--tokenizer", "char", "--outdir", str(tmp_path / "o"), *args]
    assert main(argv) == 1  # argparse keeps the last value of a repeated option
    assert message in error_line(capsys.readouterr().err)
    assert not (tmp_path / "o").exists()
