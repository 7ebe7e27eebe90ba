"""Character, byte and BPE tokenizers: vocabularies, round trips, roles, save/load and outside loaders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import data
from data.tokenizer_builders import byte_symbols

SHAKESPEARE = data.TINYSHAKESPEARE.read_text(encoding="utf-8")
ALPHABET = sorted(set(SHAKESPEARE))


@pytest.fixture(scope="module")
def char_tok() -> data.Tokenizer:
    return data.char_tokenizer([SHAKESPEARE])


@pytest.fixture(scope="module")
def bpe_tok() -> data.Tokenizer:
    return data.train_bpe([SHAKESPEARE[:60_000]], 400)


def test_char_vocabulary_is_nanogpts(char_tok: data.Tokenizer) -> None:
    # nanoGPT's prepare.py: chars = sorted(list(set(data))); stoi = {ch: i for i, ch in enumerate(chars)}
    stoi = {ch: i for i, ch in enumerate(ALPHABET)}
    assert char_tok.vocab_size == 65 and char_tok.kind == "char"
    sample = SHAKESPEARE[:5000]
    assert char_tok.encode(sample) == [stoi[c] for c in sample]
    assert (char_tok.eos_id, char_tok.bos_id, char_tok.pad_id) == (None, None, None)


def test_char_special_tokens_follow_the_characters() -> None:
    tok = data.char_tokenizer(["ba"], eos_token="<eos>", pad_token="<pad>")
    assert tok.encode("ab") == [0, 1]
    assert (tok.eos_id, tok.pad_id, tok.bos_id, tok.vocab_size) == (2, 3, None, 4)
    assert tok.decode([0, 2, 1]) == "a<eos>b" and tok.decode([0, 2, 1], skip_special_tokens=True) == "ab"


def test_char_unknown_character_is_a_clear_error(char_tok: data.Tokenizer) -> None:
    with pytest.raises(data.DataError, match=r"'é' \(U\+00E9\) at position 1 is not in the character tokenizer"):
        char_tok.encode("héllo")


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet=ALPHABET, max_size=200))
def test_char_round_trip_over_its_alphabet(text: str) -> None:
    tok = data.char_tokenizer([SHAKESPEARE[:2000], "".join(ALPHABET)])
    assert tok.decode(tok.encode(text)) == text


def test_byte_ids_are_the_utf8_bytes() -> None:
    tok = data.byte_tokenizer()
    text = "héllo wörld 😀\n\t\x00"
    assert tok.encode(text) == list(text.encode("utf-8"))
    assert (tok.vocab_size, tok.eos_id, tok.kind) == (257, 256, "byte")
    assert data.byte_tokenizer(eos_token=None).vocab_size == 256


def test_byte_symbols_are_the_byte_level_alphabet() -> None:
    import tokenizers

    symbols = byte_symbols()
    assert len(set(symbols)) == 256 and set(symbols) == set(tokenizers.pre_tokenizers.ByteLevel.alphabet())


@settings(max_examples=80, deadline=None)
@given(st.text(max_size=200))
def test_byte_round_trip_any_text(text: str) -> None:
    tok = data.byte_tokenizer()
    assert tok.decode(tok.encode(text)) == text


@settings(max_examples=80, deadline=None)
@given(st.text(max_size=200))
def test_bpe_round_trip_any_text(bpe_tok: data.Tokenizer, text: str) -> None:
    assert bpe_tok.decode(bpe_tok.encode(text)) == text


def test_bpe_compresses_and_trains_deterministically(bpe_tok: data.Tokenizer) -> None:
    text = SHAKESPEARE[:20_000]
    assert bpe_tok.kind == "bpe" and bpe_tok.vocab_size == 400 and bpe_tok.eos_id == 0
    assert len(bpe_tok.encode(text)) < 0.6 * len(text.encode("utf-8"))
    again = data.train_bpe([SHAKESPEARE[:60_000]], 400)
    assert again.backend.to_str() == bpe_tok.backend.to_str()


def test_bpe_vocabulary_too_small_is_an_error() -> None:
    with pytest.raises(data.DataError, match="at least 257 ids"):
        data.train_bpe(["some text"], 200)


def test_batch_calls_match_single_calls(bpe_tok: data.Tokenizer) -> None:
    texts = ["First Citizen:", "", "Speak, speak.\n"]
    ids = bpe_tok.encode_batch(texts)
    assert ids == [bpe_tok.encode(t) for t in texts]
    assert bpe_tok.decode_batch(ids) == texts


def test_decode_rejects_ids_outside_the_vocabulary(char_tok: data.Tokenizer) -> None:
    with pytest.raises(data.DataError, match="token id 65 is outside the vocabulary"):
        char_tok.decode([1, 65])


@pytest.mark.parametrize("build", ["char", "byte", "bpe"])
def test_save_and_load_keep_ids_and_roles(tmp_path: Path, build: str, bpe_tok: data.Tokenizer) -> None:
    tok = {
        "char": lambda: data.char_tokenizer([SHAKESPEARE[:3000]], eos_token="<|endoftext|>"),
        "byte": data.byte_tokenizer,
        "bpe": lambda: bpe_tok,
    }[build]()
    file = tok.save(tmp_path)
    assert file == tmp_path / "tokenizer.json"
    for source in (tmp_path, file):
        loaded = data.load_tokenizer(source)
        text = SHAKESPEARE[:500] + "<|endoftext|>"
        assert loaded.encode(text) == tok.encode(text)
        assert (loaded.kind, loaded.vocab_size, loaded.eos_id) == (tok.kind, tok.vocab_size, tok.eos_id)


def test_outside_loaders_read_what_save_writes(tmp_path: Path, bpe_tok: data.Tokenizer) -> None:
    import tokenizers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    bpe_tok.save(tmp_path)
    text = "Before we proceed any further, hear me speak."
    assert tokenizers.Tokenizer.from_file(str(tmp_path / "tokenizer.json")).encode(text).ids == bpe_tok.encode(text)
    fast = PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / "tokenizer.json"))
    assert fast.encode(text) == bpe_tok.encode(text)
    auto = AutoTokenizer.from_pretrained(str(tmp_path))
    assert auto.encode(text) == bpe_tok.encode(text)
    assert (auto.eos_token, auto.eos_token_id) == ("<|endoftext|>", bpe_tok.eos_id)


def test_roles_fall_back_to_conventional_names(tmp_path: Path) -> None:
    data.byte_tokenizer(eos_token="</s>", bos_token="<s>", pad_token="<pad>").save(tmp_path)
    (tmp_path / "tokenizer_config.json").unlink()
    loaded = data.load_tokenizer(tmp_path / "tokenizer.json")
    assert (loaded.eos_id, loaded.bos_id, loaded.pad_id) == (256, 257, 258)


def test_roles_written_as_dicts_are_understood(tmp_path: Path) -> None:
    data.byte_tokenizer().save(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": {"content": "<|endoftext|>"}}))
    assert data.load_tokenizer(tmp_path).eos_id == 256


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing", None, "no tokenizer.json in"),
        ("model.gguf", "GGUF", "not a readable GGUF file"),
        ("bad.json", "{not json", "not a Hugging Face tokenizer.json"),
        ("nowhere.json", None, "no such file"),
    ],
)
def test_load_errors_name_the_problem(tmp_path: Path, name: str, content: str | None, message: str) -> None:
    path = tmp_path / name
    if name == "missing":
        path.mkdir()
    elif content is not None:
        path.write_text(content)
    with pytest.raises(data.DataError, match=message):
        data.load_tokenizer(path)


def test_a_role_outside_the_vocabulary_is_an_error() -> None:
    tok = data.byte_tokenizer()
    with pytest.raises(data.DataError, match="the pad token '<pad>' is not in the tokenizer's vocabulary"):
        data.Tokenizer(tok.backend, pad_token="<pad>")
