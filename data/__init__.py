"""lmplanes data plane: tokenizers, corpus building into token shards, resumable datasets, collation.

Imports only ``specs`` from the repository (plus numpy, tokenizers, tqdm and, for the datasets, torch). The
datasets and collation load on first use, with torch, so that ``lmplanes`` commands that only read configs
or build shards start without loading torch. See README.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from data.build import build_corpus
from data.corpora import TINYSHAKESPEARE, shakespeare_char
from data.errors import DataError
from data.manifest import verify_build
from data.shards import TokenShards
from data.tokenizer import Tokenizer, load_tokenizer
from data.tokenizer_builders import byte_tokenizer, char_tokenizer, train_bpe

if TYPE_CHECKING:
    from data.batch_stream import BatchStream
    from data.collation import collate
    from data.packed import PackedSequences
    from data.rank_share import RankShare
    from data.windows import RandomWindows

# Public names that need torch, and the module each comes from.
_NEEDS_TORCH = {
    "BatchStream": "data.batch_stream",
    "PackedSequences": "data.packed",
    "RankShare": "data.rank_share",
    "RandomWindows": "data.windows",
    "collate": "data.collation",
}

__all__ = [
    "TINYSHAKESPEARE",
    "BatchStream",
    "DataError",
    "PackedSequences",
    "RankShare",
    "RandomWindows",
    "TokenShards",
    "Tokenizer",
    "build_corpus",
    "byte_tokenizer",
    "char_tokenizer",
    "collate",
    "load_tokenizer",
    "shakespeare_char",
    "train_bpe",
    "verify_build",
]


def __getattr__(name: str) -> Any:
    if name not in _NEEDS_TORCH:
        raise AttributeError(f"module 'data' has no attribute {name!r}")
    value = getattr(importlib.import_module(_NEEDS_TORCH[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
