"""The tokenizer a llama.cpp GGUF file describes in its metadata, rebuilt as a Hugging Face ``tokenizers.Tokenizer``.

A GGUF has no ``tokenizer.json``: it stores the vocabulary (``tokenizer.ggml.tokens``), the token types
(normal, control, user-defined ...), the merges, the special token ids and the *name* of the pre-tokenizer
(``tokenizer.ggml.pre``), whose regular expressions live in llama.cpp's source. Supported here:

- ``tokenizer.ggml.model = "gpt2"``: byte-level BPE. Each known ``pre`` name maps to the regular expressions
  llama.cpp splits the text with (applied in turn, each match and each gap kept as a piece), then the bytes
  are spelled in GPT-2's byte alphabet; the Llama 3 family also takes a whole piece that is itself a token
  before any merge (llama.cpp's ``ignore_merges``). An unknown ``pre`` name is refused rather than guessed.
- ``tokenizer.ggml.model = "llama"``: SentencePiece-style BPE over scored pieces with byte fallback
  (:mod:`data.gguf_sentencepiece`).

Control tokens become special added tokens and user-defined ones plain added tokens, so both are matched
whole in the text, as llama.cpp does. ``tokenizer.chat_template`` is kept for the caller.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import tokenizers
from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers, processors

from data.errors import DataError
from data.gguf_sentencepiece import sentencepiece_backend

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6  # tokenizer.ggml.token_type values

# The splits of llama.cpp's pre-tokenizer types (llama-vocab.cpp), by the names converters write.
_GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
_LLAMA3 = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)
_QWEN2 = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)


@dataclass(frozen=True, slots=True)
class PreTokenizer:
    splits: tuple[str, ...]
    ignore_merges: bool = False  # a piece that is a token is taken whole
    add_bos: bool = False  # llama.cpp's default when the file does not say


_GPT2_PRE = PreTokenizer((_GPT2,))
_DIGITS_PRE = PreTokenizer((r"\p{N}", _GPT2))
_LLAMA3_PRE = PreTokenizer((_LLAMA3,), ignore_merges=True, add_bos=True)
_QWEN2_PRE = PreTokenizer((_QWEN2,))
PRE_TOKENIZERS = {
    **dict.fromkeys(("gpt-2", "mpt", "olmo", "jais"), _GPT2_PRE),
    **dict.fromkeys(("starcoder", "refact", "command-r", "smollm", "codeshell", "exaone", "minerva"), _DIGITS_PRE),
    **dict.fromkeys(("llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral"), _LLAMA3_PRE),
    **dict.fromkeys(("qwen2", "stablelm2", "deepseek-r1-qwen"), _QWEN2_PRE),
}
MODELS = ("gpt2", "llama")


@dataclass(frozen=True, slots=True)
class GGUFTokenizer:
    """What :func:`read_gguf_tokenizer` finds: the backend, the role tokens and the chat template."""

    backend: tokenizers.Tokenizer
    roles: dict[str, str | None]  # eos_token / bos_token / pad_token -> token text
    chat_template: str | None


def read_gguf_tokenizer(path: str | os.PathLike[str]) -> GGUFTokenizer:
    """The tokenizer of the GGUF file ``path``. A file without one, or with a tokenizer model or pre-tokenizer
    this plane does not know, is a :class:`DataError` that names it and the supported ones."""
    file = Path(path)
    if not file.is_file():
        raise DataError(f"cannot load a tokenizer: {file}: no such file")
    try:
        reader = gguf.GGUFReader(file)
    except (ValueError, OSError, KeyError, IndexError) as exc:
        raise DataError(f"{file}: not a readable GGUF file ({type(exc).__name__}: {exc})") from exc
    meta = {key: field.contents() for key, field in reader.fields.items() if key.startswith("tokenizer.")}
    kind = meta.get("tokenizer.ggml.model")
    tokens = meta.get("tokenizer.ggml.tokens")
    if kind is None or not tokens:
        raise DataError(f"{file}: the GGUF file holds no tokenizer (no tokenizer.ggml.model / tokenizer.ggml.tokens)")
    repeated = [token for token, count in Counter(tokens).items() if count > 1]
    if repeated:
        raise DataError(f"{file}: the token list repeats {len(repeated)} tokens (e.g. {repeated[0]!r}); ids would clash")
    types = meta.get("tokenizer.ggml.token_type") or [NORMAL] * len(tokens)
    if kind == "gpt2":
        pre = _pre_tokenizer(meta.get("tokenizer.ggml.pre"), file)
        backend = _byte_level_backend(tokens, meta.get("tokenizer.ggml.merges") or [], pre, file)
        add_bos_default = pre.add_bos
    elif kind == "llama":
        backend = sentencepiece_backend(tokens, meta.get("tokenizer.ggml.scores"), types, meta, file)
        add_bos_default = True
    else:
        raise DataError(f"{file}: tokenizer model {kind!r} is not supported; supported: {', '.join(MODELS)}")
    _add_tokens(backend, tokens, types)
    roles = {f"{role}_token": _token(meta, role, tokens, file) for role in ("eos", "bos", "pad")}
    add_bos = bool(meta.get("tokenizer.ggml.add_bos_token", add_bos_default))
    add_eos = bool(meta.get("tokenizer.ggml.add_eos_token", False))
    _template(backend, roles["bos_token"] if add_bos else None, roles["eos_token"] if add_eos else None)
    template = meta.get("tokenizer.chat_template")
    return GGUFTokenizer(backend, roles, template if isinstance(template, str) else None)


def _pre_tokenizer(name: Any, file: Path) -> PreTokenizer:
    if name not in PRE_TOKENIZERS:
        said = "names no pre-tokenizer (tokenizer.ggml.pre)" if name is None else f"names pre-tokenizer {name!r}"
        raise DataError(
            f"{file}: the GGUF file {said}, which is not supported; supported: {', '.join(sorted(PRE_TOKENIZERS))}"
        )
    return PRE_TOKENIZERS[name]


def _byte_level_backend(tokens: list[str], merges: list[str], pre: PreTokenizer, file: Path) -> tokenizers.Tokenizer:
    split = [merge.split(" ") for merge in merges]
    bad = [merge for merge, parts in zip(merges, split) if len(parts) != 2]
    if bad:
        raise DataError(f"{file}: {len(bad)} merges are not two tokens separated by one space (e.g. {bad[0]!r})")
    pairs = [(left, right) for left, right in split]
    vocab = {token: index for index, token in enumerate(tokens)}
    model = models.BPE(vocab=vocab, merges=pairs, ignore_merges=pre.ignore_merges)
    backend = tokenizers.Tokenizer(model)
    splits = [pre_tokenizers.Split(Regex(pattern), behavior="isolated") for pattern in pre.splits]
    backend.pre_tokenizer = pre_tokenizers.Sequence([*splits, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    backend.decoder = decoders.ByteLevel()
    return backend


def _add_tokens(backend: tokenizers.Tokenizer, tokens: list[str], types: list[int]) -> None:
    """Control tokens as special added tokens, user-defined ones as plain added tokens: both matched whole."""
    control = [AddedToken(t, special=True, normalized=False) for t, kind in zip(tokens, types) if kind == CONTROL]
    user = [AddedToken(t, special=False, normalized=False) for t, kind in zip(tokens, types) if kind == USER_DEFINED]
    backend.add_special_tokens(control)
    backend.add_tokens(user)


def _token(meta: dict[str, Any], role: str, tokens: list[str], file: Path) -> str | None:
    key = f"tokenizer.ggml.{'padding' if role == 'pad' else role}_token_id"
    index = meta.get(key)
    if index is None:
        return None
    if not 0 <= index < len(tokens):
        raise DataError(f"{file}: {key} is {index}, outside the {len(tokens)} tokens")
    return tokens[index]


def _template(backend: tokenizers.Tokenizer, bos: str | None, eos: str | None) -> None:
    """What ``backend.encode(text)`` adds with special tokens on (``Tokenizer.encode`` never adds any)."""
    if bos is None and eos is None:
        return
    ends = [token for token in (bos, eos) if token is not None]
    single = " ".join([*(["$A"] if bos is None else [bos, "$A"]), *([eos] if eos else [])])
    pair = " ".join([single, *([bos] if bos else []), "$B", *([eos] if eos else [])])
    backend.post_processor = processors.TemplateProcessing(
        single=single, pair=pair, special_tokens=[(t, backend.token_to_id(t)) for t in dict.fromkeys(ends)]
    )
