"""Build the three tokenizers of this plane, each a Hugging Face tokenizer underneath.

- character: the sorted set of characters (code points) of a corpus, as nanoGPT's shakespeare-char builds it
  (65 for tinyshakespeare); a WordLevel model over single characters behind a pre-tokenizer that isolates
  each one. A character outside the vocabulary is an error (there is no unknown token), so nothing is lost
  silently. Special tokens follow the characters, so the character ids stay nanoGPT's.
- byte: the 256 bytes, id = byte value, then the special tokens; a byte-level BPE with no merges.
- BPE: byte-level BPE trained on a corpus with ``tokenizers.trainers.BpeTrainer``; special tokens come first.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers

from data.errors import DataError
from data.tokenizer import CHARACTER_SPLIT, Tokenizer

DEFAULT_EOS = "<|endoftext|>"


def char_tokenizer(
    texts: Iterable[str],
    *,
    eos_token: str | None = None,
    bos_token: str | None = None,
    pad_token: str | None = None,
) -> Tokenizer:
    """A character tokenizer over the sorted characters of ``texts``, special tokens appended after them."""
    alphabet: set[str] = set()
    for text in texts:
        alphabet.update(text)
    if not alphabet:
        raise DataError("cannot build a character tokenizer from an empty corpus")
    backend = tokenizers.Tokenizer(models.WordLevel({c: i for i, c in enumerate(sorted(alphabet))}, unk_token=None))
    backend.pre_tokenizer = CHARACTER_SPLIT
    backend.decoder = decoders.Fuse()  # characters join without separators
    return _with_specials(backend, eos_token=eos_token, bos_token=bos_token, pad_token=pad_token)


def byte_tokenizer(
    *,
    eos_token: str | None = DEFAULT_EOS,
    bos_token: str | None = None,
    pad_token: str | None = None,
) -> Tokenizer:
    """The byte tokenizer: ids 0-255 are the UTF-8 bytes of the text, special tokens follow from 256."""
    symbols = byte_symbols()
    backend = _byte_level(models.BPE(vocab={symbols[b]: b for b in range(256)}, merges=[]))
    return _with_specials(backend, eos_token=eos_token, bos_token=bos_token, pad_token=pad_token)


def train_bpe(
    texts: Sequence[str],
    vocab_size: int,
    *,
    eos_token: str | None = DEFAULT_EOS,
    bos_token: str | None = None,
    pad_token: str | None = None,
    min_frequency: int = 2,
) -> Tokenizer:
    """Byte-level BPE trained on ``texts`` up to ``vocab_size`` ids (fewer if the corpus runs out of pairs)."""
    specials = _specials(eos_token, bos_token, pad_token)
    smallest = 256 + len(specials)
    if vocab_size < smallest:
        raise DataError(f"a byte-level BPE vocabulary needs at least {smallest} ids (256 bytes + special tokens), "
                        f"got {vocab_size}")
    if not any(texts):
        raise DataError("cannot train a BPE tokenizer on an empty corpus")
    backend = _byte_level(models.BPE())
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte stays encodable, seen or not
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer, length=len(texts))
    return Tokenizer(backend, eos_token=eos_token, bos_token=bos_token, pad_token=pad_token)


def byte_symbols() -> list[str]:
    """The printable character byte-level tokenizers (GPT-2's convention) write for each byte value.

    Bytes that are printable, non-space Latin-1 characters stand for themselves; the others (controls, space,
    soft hyphen ...) take the code points from 256 upwards, in byte order.
    """
    printable = {*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)}
    symbols, shifted = [], 0
    for byte in range(256):
        if byte in printable:
            symbols.append(chr(byte))
        else:
            symbols.append(chr(256 + shifted))
            shifted += 1
    return symbols


def _byte_level(model: models.Model) -> tokenizers.Tokenizer:
    backend = tokenizers.Tokenizer(model)
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)  # never alter the text
    backend.decoder = decoders.ByteLevel()
    return backend


def _specials(*tokens: str | None) -> list[str]:
    found = [t for t in tokens if t is not None]
    if any(not t for t in found):
        raise DataError("a special token cannot be the empty string")
    return list(dict.fromkeys(found))  # one id for a token given two roles


def _with_specials(backend: tokenizers.Tokenizer, **roles: str | None) -> Tokenizer:
    backend.add_special_tokens(_specials(*roles.values()))
    return Tokenizer(backend, **roles)
