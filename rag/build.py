"""From a folder of documents to a :class:`rag.RagIndex`: read, chunk, embed, index.

Documents are the ``.md``, ``.markdown``, ``.txt`` and ``.rst`` files below the folder (hidden paths skipped),
named by their path relative to it. Markdown files are cut by headings when the chunker is ``markdown``; other
files are then cut into paragraphs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from data.errors import DataError
from data.tokenizer import Tokenizer
from rag.chunkers import ChunkerConfig, chunk_document
from rag.chunks import Chunk
from rag.store import IndexConfig, RagIndex
from specs.protocols import TextEmbedder

DOCUMENT_SUFFIXES = (".md", ".markdown", ".txt", ".rst")
_MARKDOWN = (".md", ".markdown")


def read_folder(folder: str | os.PathLike[str]) -> dict[str, str]:
    """``{relative path: text}`` for every document below ``folder``, in sorted order (UTF-8, strictly)."""
    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder")
    documents = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if path.is_file() and path.suffix.lower() in DOCUMENT_SUFFIXES and not any(p.startswith(".") for p in relative.parts):
            try:
                documents[relative.as_posix()] = path.read_text(encoding="utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(f"{path}: not UTF-8 text (byte {exc.start} cannot be decoded)") from exc
    if not documents:
        raise DataError(f"{root}: no documents ({', '.join(DOCUMENT_SUFFIXES)} files) below it")
    return documents


def chunk_documents(documents: Mapping[str, str], chunker: ChunkerConfig, tokenizer: Tokenizer | None = None) -> list[Chunk]:
    chunks = []
    for source, text in documents.items():
        cfg = chunker
        if chunker.kind == "markdown" and not source.lower().endswith(_MARKDOWN):
            cfg = ChunkerConfig(kind="paragraphs", max_chars=chunker.max_chars)
        chunks.extend(chunk_document(text, source, cfg, tokenizer))
    return chunks


def build_index(documents: Mapping[str, str], embedder: TextEmbedder, *, chunker: ChunkerConfig | None = None,
                index: IndexConfig | None = None, tokenizer: Tokenizer | None = None,
                encoder: Mapping[str, Any] | None = None) -> RagIndex:
    """Chunk ``documents`` (``{source: text}``), embed every chunk and index it. ``encoder`` describes the
    embedder's model for the saved index (see :class:`rag.RagIndex`)."""
    chunks = chunk_documents(documents, chunker or ChunkerConfig(), tokenizer)
    store = RagIndex(embedder.dim, index, encoder=encoder)
    store.add(chunks, embedder.embed([c.embedding_text() for c in chunks]))
    return store
