"""One tokenizer interface over a Hugging Face ``tokenizers.Tokenizer``.

Every tokenizer here (character, byte, BPE, or any ``tokenizer.json`` loaded from disk) is a
``tokenizers.Tokenizer`` underneath, so :meth:`Tokenizer.save` always writes a standard ``tokenizer.json`` that
``tokenizers.Tokenizer.from_file`` and ``transformers.PreTrainedTokenizerFast`` load anywhere. The roles of
the special tokens (end/begin of sequence, padding), which ``tokenizer.json`` cannot express, go beside it in
``tokenizer_config.json``, the file where Hugging Face keeps them (with the chat template, when there is one).
A llama.cpp GGUF file's tokenizer is rebuilt from its metadata (:mod:`data.gguf_tokenizer`).
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tokenizers

from data.errors import DataError
from specs.config_files import atomic_write_text

TOKENIZER_FILE = "tokenizer.json"
ROLES_FILE = "tokenizer_config.json"
ROLES = ("eos", "bos", "pad")

# Names that mean a role when a tokenizer.json arrives without a tokenizer_config.json beside it.
_CONVENTIONAL = {
    "eos": ("<|endoftext|>", "</s>", "<eos>", "<|end_of_text|>"),
    "bos": ("<s>", "<bos>", "<|begin_of_text|>"),
    "pad": ("<pad>", "[PAD]", "<|pad|>"),
}

# The pre-tokenizer of character tokenizers: every code point is its own piece ("[\s\S]" also matches newlines).
CHARACTER_SPLIT = tokenizers.pre_tokenizers.Split(tokenizers.Regex(r"[\s\S]"), behavior="isolated")


class Tokenizer:
    """Text <-> token ids. ``backend`` is the Hugging Face tokenizer; the roles name special tokens in it.

    ``decode`` keeps special tokens unless told otherwise, so ``decode(encode(text)) == text`` for any text the
    tokenizer can encode, special-token spellings included. ``chat_template`` is the model's Jinja chat
    template when its files carry one (Hugging Face's ``tokenizer_config.json``, a GGUF's metadata), else None.
    """

    def __init__(
        self,
        backend: tokenizers.Tokenizer,
        *,
        eos_token: str | None = None,
        bos_token: str | None = None,
        pad_token: str | None = None,
        chat_template: str | None = None,
    ) -> None:
        self.backend = backend
        self.chat_template = chat_template
        self.roles = {"eos": eos_token, "bos": bos_token, "pad": pad_token}
        for role, token in self.roles.items():
            if token is not None and backend.token_to_id(token) is None:
                raise DataError(f"the {role} token {token!r} is not in the tokenizer's vocabulary")

    @property
    def vocab_size(self) -> int:
        """Number of ids, special tokens included (every id is below it)."""
        return self.backend.get_vocab_size(with_added_tokens=True)

    @property
    def eos_id(self) -> int | None:
        return self._role_id("eos")

    @property
    def bos_id(self) -> int | None:
        return self._role_id("bos")

    @property
    def pad_id(self) -> int | None:
        return self._role_id("pad")

    def _role_id(self, role: str) -> int | None:
        token = self.roles[role]
        return None if token is None else self.backend.token_to_id(token)

    @functools.cached_property
    def kind(self) -> str:
        """``char``, ``byte`` or ``bpe`` for the tokenizers this plane builds; ``MODEL`` (e.g. ``unigram``) else."""
        model = json.loads(self.backend.model.__getstate__())
        name = str(model.get("type", "unknown")).lower()
        if name == "wordlevel" and _isolates_characters(self.backend):
            return "char"
        if name == "bpe" and not model.get("merges"):
            return "byte"
        return name

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; no special tokens are added."""
        return self.encode_batch([text])[0]

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text (encoded in parallel by the backend)."""
        try:
            encodings = self.backend.encode_batch(list(texts), add_special_tokens=False)
        except Exception as exc:  # the backend raises a bare Exception for a text it cannot encode
            raise DataError(self._why_unencodable(texts, exc)) from exc
        return [encoding.ids for encoding in encodings]

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = False) -> str:
        """The text of ``ids``; ids of a byte-level tokenizer that do not form UTF-8 decode to U+FFFD."""
        return self.decode_batch([ids], skip_special_tokens=skip_special_tokens)[0]

    def decode_batch(self, batch: Sequence[Sequence[int]], *, skip_special_tokens: bool = False) -> list[str]:
        size = self.vocab_size
        arrays = [np.asarray(ids, dtype=np.int64).reshape(-1) for ids in batch]  # lists, arrays or tensors
        for ids in arrays:
            outside = ids[(ids < 0) | (ids >= size)]
            if len(outside):
                raise DataError(f"token id {outside[0]} is outside the vocabulary (ids run from 0 to {size - 1})")
        return self.backend.decode_batch([ids.tolist() for ids in arrays], skip_special_tokens=skip_special_tokens)

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``tokenizer.json`` and ``tokenizer_config.json`` (the roles) into ``directory`` (created if
        missing, as Hugging Face's ``save_pretrained`` does); return the first."""
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / TOKENIZER_FILE
        atomic_write_text(path, self.backend.to_str(pretty=True))
        config: dict[str, Any] = {"tokenizer_class": "PreTrainedTokenizerFast"}
        config.update({f"{role}_token": token for role, token in self.roles.items() if token is not None})
        if self.chat_template is not None:
            config["chat_template"] = self.chat_template
        atomic_write_text(folder / ROLES_FILE, json.dumps(config, indent=2) + "\n")
        return path

    def __repr__(self) -> str:
        roles = ", ".join(f"{role}={token!r}" for role, token in self.roles.items() if token is not None)
        return f"Tokenizer({self.kind}, vocab_size={self.vocab_size}{', ' + roles if roles else ''})"

    def _why_unencodable(self, texts: Sequence[str], exc: Exception) -> str:
        vocab = self.backend.get_vocab(with_added_tokens=True)
        if self.kind == "char":
            for text in texts:
                for position, char in enumerate(text):
                    if char not in vocab:
                        return (
                            f"character {char!r} (U+{ord(char):04X}) at position {position} is not in the character "
                            f"tokenizer's vocabulary of {self.vocab_size} tokens; build the tokenizer from a corpus "
                            "that contains it"
                        )
        return f"the tokenizer cannot encode the text: {exc}"


def _isolates_characters(backend: tokenizers.Tokenizer) -> bool:
    """Whether the pre-tokenizer splits text into single characters (how :func:`char_tokenizer` builds one)."""
    pre = backend.pre_tokenizer
    return pre is not None and json.loads(pre.__getstate__()) == json.loads(CHARACTER_SPLIT.__getstate__())



def load_tokenizer(path: str | os.PathLike[str]) -> Tokenizer:
    """Load a tokenizer from a directory holding ``tokenizer.json``, from a ``tokenizer.json`` file, or from a
    llama.cpp ``.gguf`` file's metadata.

    The roles (and chat template) come from ``tokenizer_config.json`` beside the file when there is one, else
    from conventional token names (``<|endoftext|>``, ``</s>``, ``<s>``, ``<pad>`` ...); a GGUF file names its
    own.
    """
    source = Path(path)
    if source.suffix == ".gguf":
        from data.gguf_tokenizer import read_gguf_tokenizer  # loads the gguf package only when needed

        found = read_gguf_tokenizer(source)
        return Tokenizer(found.backend, **found.roles, chat_template=found.chat_template)
    file = source / TOKENIZER_FILE if source.is_dir() else source
    if not file.is_file():
        where = f"no {TOKENIZER_FILE} in {source}" if source.is_dir() else f"{source}: no such file"
        raise DataError(f"cannot load a tokenizer: {where}")
    try:
        backend = tokenizers.Tokenizer.from_file(str(file))
    except Exception as exc:  # the backend's parse errors are bare Exceptions
        raise DataError(f"{file}: not a Hugging Face tokenizer.json ({exc})") from exc
    # A tokenizer.json may ask for fixed padding and truncation (all-MiniLM-L6-v2's: 128); encode returns the
    # text's own ids, whole, as transformers' tokenizers do unless a call asks otherwise.
    backend.no_padding()
    backend.no_truncation()
    return Tokenizer(backend, **_roles(backend, file.parent / ROLES_FILE))


def _roles(backend: tokenizers.Tokenizer, config_file: Path) -> dict[str, str | None]:
    if config_file.is_file():
        try:
            config = json.loads(config_file.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise DataError(f"{config_file}: not valid JSON ({exc})") from exc
        found = {f"{role}_token": _token_text(config.get(f"{role}_token")) for role in ROLES}
        template = config.get("chat_template")
        return {**found, "chat_template": template if isinstance(template, str) else None}
    specials = {token.content for token in backend.get_added_tokens_decoder().values() if token.special}
    return {
        f"{role}_token": next((name for name in names if name in specials), None) for role, names in _CONVENTIONAL.items()
    }


def _token_text(value: Any) -> str | None:
    """A role's token as Hugging Face writes it: a string, or a dict with its ``content``."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None
