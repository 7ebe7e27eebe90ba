"""Chunkers: exact slices with their hashes, token windows with overlap, sentence/paragraph packing, Markdown
sections with their heading paths."""

from __future__ import annotations

import hashlib

import pytest

import data
from rag import Chunk, ChunkerConfig, chunk_document, chunk_markdown, chunk_text, chunk_tokens
from specs.config_io import FieldProblem

MARKDOWN = """Preamble line.

# Guide

Intro paragraph.

## Install

Run pip install.

```bash
# not a heading
echo hi
```

### Extras

Optional things.

## Empty

# Reference ##

Last words.
"""


def assert_slices(chunks: list[Chunk], document: str) -> None:
    for chunk in chunks:
        assert document[chunk.start : chunk.end] == chunk.text
        assert chunk.sha256 == hashlib.sha256(chunk.text.encode()).hexdigest()
        assert chunk.text == chunk.text.strip() and chunk.text
    assert [c.start for c in chunks] == sorted(c.start for c in chunks)


def test_token_windows_overlap_and_cover_the_text() -> None:
    text = "abcdefghij klmnopqrstuvwxyz ABCDEFG"  # a character tokenizer: token i is character i
    tok = data.char_tokenizer([text])
    chunks = chunk_tokens(text, "doc", tok, size=10, overlap=3)
    assert [(c.start, c.end) for c in chunks] == [(0, 10), (7, 17), (14, 24), (21, 31), (28, 35)]
    assert_slices(chunks, text)
    assert chunk_tokens(text, "doc", tok, size=100, overlap=0)[0].text == text
    with pytest.raises(ValueError, match="overlap"):
        chunk_tokens(text, "doc", tok, size=4, overlap=4)


def test_sentences_and_paragraphs_are_packed_up_to_max_chars() -> None:
    text = "  One is here. Two (really!) is here?\nThree \"quoted.\" Four\n\n\nFive.  Six is a long sentence."
    sentences = chunk_text(text, "s", unit="sentence", max_chars=22)
    assert [c.text for c in sentences] == ["One is here.", "Two (really!) is here?", 'Three "quoted." Four',
                                           "Five.  Six is a long", "sentence."]  # a 23-character sentence is cut
    assert_slices(sentences, text)
    packed = chunk_text(text, "s", unit="sentence", max_chars=40)
    assert [c.text for c in packed] == ["One is here. Two (really!) is here?", 'Three "quoted." Four\n\n\nFive.',
                                        "Six is a long sentence."]
    paragraphs = chunk_text(text, "s", unit="paragraph", max_chars=80)
    assert [c.text for c in paragraphs] == [text.strip()[: text.strip().index("\n\n")], "Five.  Six is a long sentence."]
    assert_slices(packed, text)
    assert_slices(paragraphs, text)


def test_markdown_sections_keep_their_heading_paths() -> None:
    chunks = chunk_markdown(MARKDOWN, "guide.md", max_chars=1000)
    assert_slices(chunks, MARKDOWN)
    assert [c.headings for c in chunks] == [(), ("Guide",), ("Guide", "Install"), ("Guide", "Install", "Extras"),
                                            ("Reference",)]  # "Empty" has no text; "# not a heading" is code
    assert chunks[2].text.startswith("## Install") and "# not a heading" in chunks[2].text
    assert chunks[4].embedding_text() == "Reference\n# Reference ##\n\nLast words."
    assert chunks[3].citation() == f"guide.md:{chunks[3].start}-{chunks[3].end} (Guide > Install > Extras)"
    small = chunk_markdown(MARKDOWN, "guide.md", max_chars=20)  # long sections are cut into paragraphs
    assert_slices(small, MARKDOWN)
    assert all(len(c.text) <= 20 for c in small)
    assert [c.text for c in small if c.headings == ("Guide", "Install")][:2] == ["## Install", "Run pip install."]


def test_chunk_document_dispatches_and_chunks_round_trip_as_json() -> None:
    tok = data.char_tokenizer([MARKDOWN])
    for kind in ("tokens", "sentences", "paragraphs", "markdown"):
        chunks = chunk_document(MARKDOWN, "g.md", ChunkerConfig(kind=kind, max_chars=60, size=30, overlap=5), tok)
        assert_slices(chunks, MARKDOWN)
        assert [Chunk.from_json(c.to_json()) for c in chunks] == chunks
    with pytest.raises(FieldProblem, match="overlap"):
        ChunkerConfig(size=10, overlap=10)
