"""lmplanes data plane: tokenizers and the shipped corpus.

Imports only ``specs`` from the repository (plus numpy, tokenizers and tqdm). See README.md.
"""

from data.corpora import TINYSHAKESPEARE
from data.errors import DataError
from data.tokenizer import Tokenizer, load_tokenizer
from data.tokenizer_builders import byte_tokenizer, char_tokenizer, train_bpe

__all__ = [
    "TINYSHAKESPEARE",
    "DataError",
    "Tokenizer",
    "byte_tokenizer",
    "char_tokenizer",
    "load_tokenizer",
    "train_bpe",
]
