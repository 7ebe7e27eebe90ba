"""``lmplanes convert --gguf FILE``: an lmplanes checkpoint (or a Hugging Face directory) with the file's tokenizer
beside the weights, on a small GGUF written here."""

from __future__ import annotations

import json

import pytest
import torch
import transformers

import data
import model
from pack.cli import main
from tests.gguf_files import byte_level_vocab, llama_metadata, llama_tensors, write_gguf


@pytest.fixture(scope="module")
def gguf_file(tmp_path_factory):
    cfg = transformers.LlamaConfig(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, intermediate_size=96,
        vocab_size=257, max_position_embeddings=128, tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM(cfg)
    vocab = {**byte_level_vocab(), "eos_token_id": 256, "chat_template": "{{ messages[0]['content'] }}"}
    folder = tmp_path_factory.mktemp("gguf")
    return write_gguf(folder / "tiny.gguf", metadata=llama_metadata(cfg), tensors=llama_tensors(hf), tokenizer=vocab)


def _logits(lm: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return lm(torch.arange(20).view(1, 20))


def test_convert_writes_a_checkpoint_with_the_tokenizer(gguf_file, tmp_path, capsys):
    out = tmp_path / "ckpt"
    assert main(["convert", "--gguf", str(gguf_file), "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    assert model.verify_checkpoint(out) == []
    listed = {entry["path"] for entry in json.loads((out / "MANIFEST.json").read_text())["files"]}
    assert {"tokenizer.json", "tokenizer_config.json"} <= listed
    assert json.loads((out / "modelcard.json").read_text())["tokenizer"] == "tokenizer.json"
    loaded = model.load_checkpoint(out)
    assert loaded.config.name == "tiny-llama"
    torch.testing.assert_close(_logits(loaded), _logits(model.from_gguf(gguf_file)), atol=0, rtol=0)
    tok, original = data.load_tokenizer(out), data.load_tokenizer(gguf_file)
    assert tok.encode("héllo wörld") == original.encode("héllo wörld") and tok.eos_id == 256
    assert tok.chat_template == "{{ messages[0]['content'] }}"


def test_convert_to_hugging_face_loads_in_transformers(gguf_file, tmp_path):
    out = tmp_path / "hf"
    assert main(["convert", "--gguf", str(gguf_file), "--out", str(out), "--to", "hf"]) == 0
    hf = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    with torch.no_grad():
        torch.testing.assert_close(hf(torch.arange(20).view(1, 20)).logits, _logits(model.from_gguf(gguf_file)), atol=1e-5, rtol=0)
    assert transformers.AutoTokenizer.from_pretrained(out)("héllo")["input_ids"] == data.load_tokenizer(gguf_file).encode("héllo")


def test_an_unreadable_tokenizer_is_one_line_and_writes_nothing(tmp_path, capsys):
    file = write_gguf(tmp_path / "x.gguf", tokenizer={"model": "gpt2", "pre": "made-up", "tokens": ["a"]})
    assert main(["convert", "--gguf", str(file), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot rebuild the tokenizer" in err[0] and "'made-up'" in err[0]
    assert not (tmp_path / "out").exists()
