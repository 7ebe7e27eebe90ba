"""GGUF ``tokenizer.ggml.model = "llama"``: SentencePiece-style BPE over scored pieces, as llama.cpp runs it.

llama.cpp writes spaces as ``▁`` (with one in front of the text when ``tokenizer.ggml.add_space_prefix``, the
default), then repeatedly joins the adjacent pair whose union is a piece of the highest score; a character no
piece covers falls back to its UTF-8 bytes (the ``<0xXX>`` pieces), else to the unknown token. The same
procedure as a ``tokenizers`` BPE: a merge ``(left, right)`` for every piece that splits into two pieces,
ranked by the piece's score (best first), with byte fallback. The decoder undoes it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import tokenizers
from tokenizers import decoders, models, normalizers

from data.errors import DataError

_SPACE = "\u2581"  # ▁
_UNKNOWN, _CONTROL, _BYTE = 2, 3, 6


def sentencepiece_backend(
    tokens: list[str], scores: list[float] | None, types: list[int], meta: dict[str, Any], file: Path
) -> tokenizers.Tokenizer:
    if scores is None or len(scores) != len(tokens):
        raise DataError(f"{file}: a 'llama' tokenizer needs one score per token (tokenizer.ggml.scores)")
    vocab = {token: index for index, token in enumerate(tokens)}
    unk_id = meta.get("tokenizer.ggml.unknown_token_id")
    if unk_id is None:
        unk_id = next((i for i, kind in enumerate(types) if kind == _UNKNOWN), None)
    model = models.BPE(
        vocab=vocab,
        merges=_merges(tokens, scores, types),
        unk_token=None if unk_id is None else tokens[unk_id],
        fuse_unk=True,
        byte_fallback=any(kind == _BYTE for kind in types),
    )
    backend = tokenizers.Tokenizer(model)
    prefix = bool(meta.get("tokenizer.ggml.add_space_prefix", True))
    steps: list[normalizers.Normalizer] = [normalizers.Prepend(_SPACE)] if prefix else []
    backend.normalizer = normalizers.Sequence([*steps, normalizers.Replace(" ", _SPACE)])
    ends: list[decoders.Decoder] = [decoders.Strip(" ", 1, 0)] if prefix else []
    backend.decoder = decoders.Sequence(
        [decoders.Replace(_SPACE, " "), decoders.ByteFallback(), decoders.Fuse(), *ends]
    )
    return backend


def _merges(tokens: list[str], scores: list[float], types: list[int]) -> list[tuple[str, str]]:
    """Every split of a piece into two pieces, best piece first (ties: the lower id, then the shorter left)."""
    pieces = {token: index for index, token in enumerate(tokens) if types[index] not in (_CONTROL, _BYTE)}
    found: list[tuple[float, int, int, tuple[str, str]]] = []
    for token, index in pieces.items():
        for cut in range(1, len(token)):
            left, right = token[:cut], token[cut:]
            if left in pieces and right in pieces:
                found.append((-scores[index], index, cut, (left, right)))
    found.sort()
    return [pair for *_, pair in found]
