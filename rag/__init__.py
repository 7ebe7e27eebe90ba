"""lmplanes retrieval-augmented generation: chunkers, an embedder over any encoder, vector and lexical indexes
persisted with their chunks, hybrid retrieval, and answers with citations from any chat model.

Imports ``specs`` and ``data`` only: the encoder is any :class:`specs.EncoderModel` (as a
:class:`specs.TextEmbedder`) and the generator any :class:`specs.ChatGenerator` (``serve.ServedModel`` is one);
``pack`` builds them. See README.md.
"""

from rag.answer import Answer, answer, build_messages, citations
from rag.bm25 import BM25Index, reciprocal_rank_fusion
from rag.build import build_index, chunk_documents, read_folder
from rag.chunkers import ChunkerConfig, chunk_document, chunk_markdown, chunk_text, chunk_tokens
from rag.chunks import Chunk
from rag.embedder import Embedder, EmbedderSettings, sentence_settings
from rag.faiss_index import FaissIndex
from rag.quality import LabelledQuestion, first_relevant_ranks, load_questions, mean_reciprocal_rank, recall_at_k
from rag.store import Hit, IndexConfig, RagIndex
from rag.vector_index import ExactIndex, VectorIndex

__all__ = [
    "Answer",
    "BM25Index",
    "Chunk",
    "ChunkerConfig",
    "Embedder",
    "EmbedderSettings",
    "ExactIndex",
    "FaissIndex",
    "Hit",
    "IndexConfig",
    "LabelledQuestion",
    "RagIndex",
    "VectorIndex",
    "answer",
    "build_index",
    "build_messages",
    "chunk_document",
    "chunk_documents",
    "chunk_markdown",
    "chunk_text",
    "chunk_tokens",
    "citations",
    "first_relevant_ranks",
    "load_questions",
    "mean_reciprocal_rank",
    "read_folder",
    "recall_at_k",
    "reciprocal_rank_fusion",
    "sentence_settings",
]
