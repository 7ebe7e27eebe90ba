"""lmplanes data plane: tokenizers, corpus building into token shards, reading shards.

Imports only ``specs`` from the repository (plus numpy, tokenizers and tqdm). See README.md.
"""

from data.build import build_corpus
from data.corpora import TINYSHAKESPEARE, shakespeare_char
from data.errors import DataError
from data.manifest import verify_build
from data.shards import TokenShards
from data.tokenizer import Tokenizer, load_tokenizer
from data.tokenizer_builders import byte_tokenizer, char_tokenizer, train_bpe

__all__ = [
    "TINYSHAKESPEARE",
    "DataError",
    "TokenShards",
    "Tokenizer",
    "build_corpus",
    "byte_tokenizer",
    "char_tokenizer",
    "load_tokenizer",
    "shakespeare_char",
    "train_bpe",
    "verify_build",
]
