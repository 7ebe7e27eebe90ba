"""Split a document into chunks: by tokens with overlap, by sentences or paragraphs, or by Markdown headings.

Every chunker returns exact slices of the document (see :mod:`rag.chunks`) with surrounding whitespace left
out, in document order. Sentences end at ``.``, ``!`` or ``?`` (closing quotes and brackets included) before
whitespace; abbreviations such as "e.g." end one too, which only makes a chunk boundary fall a little early.
Paragraphs are separated by blank lines. Markdown headings are ATX headings (``#`` to ``######``) outside
fenced code blocks; each section keeps the path of headings above it and is cut into paragraphs when longer
than ``max_chars``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from data.tokenizer import Tokenizer
from rag.chunks import Chunk
from specs.config_io import FieldProblem

ChunkerKind = Literal["tokens", "sentences", "paragraphs", "markdown"]

_SENTENCE_END = re.compile(r"[.!?][\"')\]]*(?=\s)")
_BLANK_LINES = re.compile(r"\n[ \t]*\n\s*")
_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")


@dataclass(frozen=True, kw_only=True, slots=True)
class ChunkerConfig:
    """``kind``: how to cut. ``tokens``: windows of ``size`` tokens, each starting ``size - overlap`` tokens
    after the last (needs a tokenizer). ``sentences`` (a blank line ends one too) / ``paragraphs``: consecutive sentences (paragraphs)
    packed into chunks of at most ``max_chars`` characters (a longer paragraph is cut into sentences, a longer
    sentence at whitespace). ``markdown``: one chunk per section, cut into paragraphs past ``max_chars``."""

    kind: ChunkerKind = "markdown"
    max_chars: int = 1000
    size: int = 200
    overlap: int = 40

    def __post_init__(self) -> None:
        if self.max_chars < 1:
            raise FieldProblem("max_chars", f"must be >= 1, got {self.max_chars}")
        if self.size < 1:
            raise FieldProblem("size", f"must be >= 1, got {self.size}")
        if not 0 <= self.overlap < self.size:
            raise FieldProblem("overlap", f"must be at least 0 and below the window size {self.size}, got {self.overlap}")


def chunk_document(text: str, source: str, cfg: ChunkerConfig, tokenizer: Tokenizer | None = None) -> list[Chunk]:
    """``text`` (the document named ``source``) cut as ``cfg`` says."""
    if cfg.kind == "tokens":
        if tokenizer is None:
            raise ValueError("chunking by tokens needs a tokenizer")
        return chunk_tokens(text, source, tokenizer, size=cfg.size, overlap=cfg.overlap)
    if cfg.kind == "markdown":
        return chunk_markdown(text, source, max_chars=cfg.max_chars)
    return chunk_text(text, source, unit="sentence" if cfg.kind == "sentences" else "paragraph", max_chars=cfg.max_chars)


def chunk_tokens(text: str, source: str, tokenizer: Tokenizer, *, size: int, overlap: int) -> list[Chunk]:
    """Windows of ``size`` tokens, consecutive windows sharing ``overlap`` tokens; each chunk runs from its first
    token's first character to its last token's last one (the tokenizer's offsets into ``text``)."""
    if not 0 <= overlap < size:
        raise ValueError(f"overlap must be in [0, size={size}), got {overlap}")
    offsets = tokenizer.backend.encode(text, add_special_tokens=False).offsets
    chunks: list[Chunk] = []
    for first in range(0, len(offsets), size - overlap):
        window = offsets[first : first + size]
        chunks.extend(Chunk.of(text, source, s, e) for s, e in _stripped(text, window[0][0], window[-1][1]))
        if first + size >= len(offsets):
            break
    return chunks


def chunk_text(text: str, source: str, *, unit: Literal["sentence", "paragraph"], max_chars: int) -> list[Chunk]:
    """Sentences or paragraphs of ``text`` packed greedily into chunks of at most ``max_chars`` characters."""
    return _packed(text, source, 0, len(text), unit=unit, max_chars=max_chars)


def _packed(text: str, source: str, start: int, end: int, *, unit: Literal["sentence", "paragraph"], max_chars: int,
            headings: tuple[str, ...] = ()) -> list[Chunk]:
    """The units of ``text[start:end]`` packed into chunks, with offsets into the whole ``text``."""
    spans = _units(text, start, end, max_chars, sentences=unit == "sentence")
    groups: list[tuple[int, int]] = []
    for first, last in spans:
        if groups and last - groups[-1][0] <= max_chars:
            groups[-1] = (groups[-1][0], last)
        else:
            groups.append((first, last))
    return [Chunk.of(text, source, s, e, headings) for s, e in groups]


def chunk_markdown(text: str, source: str, *, max_chars: int) -> list[Chunk]:
    """One chunk per Markdown section (its heading line included), with the heading path as metadata; a section
    over ``max_chars`` is cut into packed paragraphs. Sections with nothing but their heading are left out."""
    chunks = []
    for start, end, body_start, path in _sections(text):
        if not text[body_start:end].strip():
            continue
        section = text[start:end]
        if len(section.strip()) <= max_chars:
            lead = len(section) - len(section.lstrip())
            chunks.append(Chunk.of(text, source, start + lead, start + len(section.rstrip()), path))
        else:
            chunks.extend(_packed(text, source, start, end, unit="paragraph", max_chars=max_chars, headings=path))
    return chunks


def _sentences(text: str, start: int, end: int, max_chars: int) -> Iterator[tuple[int, int]]:
    """Stripped sentence spans of ``text[start:end]``, a sentence over ``max_chars`` cut at whitespace."""
    position = start
    for match in [*_SENTENCE_END.finditer(text, start, end), None]:
        stop = end if match is None else match.end()
        for first, last in _stripped(text, position, stop):
            yield from _cut(text, first, last, max_chars)
        position = stop


def _cut(text: str, start: int, end: int, max_chars: int) -> Iterator[tuple[int, int]]:
    """``text[start:end]`` in pieces of at most ``max_chars``, cut at the last whitespace before the limit (or at
    the limit, for a run without any): tables and code have few sentence ends."""
    while end - start > max_chars:
        space = max(text.rfind(" ", start + 1, start + max_chars + 1), text.rfind("\n", start + 1, start + max_chars + 1))
        cut = space if space > start else start + max_chars
        yield from _stripped(text, start, cut)
        start = cut
        while start < end and text[start].isspace():
            start += 1
    yield from _stripped(text, start, end)


def _units(text: str, start: int, end: int, max_chars: int, *, sentences: bool) -> Iterator[tuple[int, int]]:
    """Stripped paragraph spans of ``text[start:end]``, or with ``sentences`` their sentences (a paragraph
    break ends a sentence too); a paragraph over ``max_chars`` gives its sentences."""
    position = start
    for match in [*_BLANK_LINES.finditer(text, start, end), None]:
        stop = end if match is None else match.start()
        for first, last in _stripped(text, position, stop):
            if sentences or last - first > max_chars:
                yield from _sentences(text, first, last, max_chars)
            else:
                yield first, last
        position = end if match is None else match.end()


def _stripped(text: str, start: int, end: int) -> Iterator[tuple[int, int]]:
    """``(start, end)`` without the whitespace at either side; nothing when only whitespace is left."""
    piece = text[start:end]
    if piece.strip():
        yield start + len(piece) - len(piece.lstrip()), start + len(piece.rstrip())


def _sections(text: str) -> Iterator[tuple[int, int, int, tuple[str, ...]]]:
    """``(start, end, body_start, heading_path)`` per section; the text before the first heading is a section
    with an empty path."""
    path: list[tuple[int, str]] = []  # (level, title) from the top
    start, body_start = 0, 0
    current: tuple[str, ...] = ()
    offset = 0
    fence: str | None = None
    for line in text.splitlines(keepends=True):
        fenced = _FENCE.match(line)
        if fenced and (fence is None or fenced.group(1)[0] == fence[0] and len(fenced.group(1)) >= len(fence)):
            fence = None if fence is not None else fenced.group(1)
        heading = None if fence is not None or fenced else _HEADING.match(line.rstrip("\r\n"))
        if heading:
            if offset > start:
                yield start, offset, body_start, current
            level = len(heading.group(1))
            path = [(lv, title) for lv, title in path if lv < level] + [(level, heading.group(2))]
            current = tuple(title for _, title in path)
            start, body_start = offset, offset + len(line)
        offset += len(line)
    if offset > start:
        yield start, offset, body_start, current
