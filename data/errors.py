"""The one error type of the data plane: bad input that the caller can fix."""

from __future__ import annotations


class DataError(ValueError):
    """Input the data plane cannot use: a missing file, an empty corpus, a character outside a tokenizer's
    vocabulary, a shard that does not match its manifest, an output directory in the way. The message names
    the file or value at fault and, where there is one, the way out."""
