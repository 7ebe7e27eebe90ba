"""lmplanes retrieval-augmented generation: chunkers, an embedder over any encoder, vector and lexical indexes
persisted with their chunks, hybrid retrieval, and answers with citations generated through ``serve``.

Imports ``specs``, ``data`` and ``serve`` only: the encoder is any :class:`specs.EncoderModel` and the generator
any :class:`serve.ServedModel`; ``pack`` builds them. See README.md.
"""

from rag.chunkers import ChunkerConfig, chunk_document, chunk_markdown, chunk_text, chunk_tokens
from rag.chunks import Chunk
from rag.embedder import Embedder, EmbedderSettings, sentence_settings

__all__ = [
    "Chunk",
    "ChunkerConfig",
    "Embedder",
    "EmbedderSettings",
    "chunk_document",
    "chunk_markdown",
    "chunk_text",
    "chunk_tokens",
    "sentence_settings",
]
