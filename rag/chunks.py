"""Chunks: pieces of a document that are embedded and retrieved one by one.

A chunk is always an exact slice of its document, ``document[start:end] == chunk.text``, so a citation can
point back into the file; ``sha256`` is the hash of that text (UTF-8), which the index store checks on load.
``headings`` is the Markdown heading path the chunk sits under (empty for plain text).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True, kw_only=True)
class Chunk:
    text: str
    source: str
    start: int
    end: int
    sha256: str
    headings: tuple[str, ...] = ()

    @classmethod
    def of(cls, document: str, source: str, start: int, end: int, headings: tuple[str, ...] = ()) -> Chunk:
        """The chunk ``document[start:end]`` of ``source``, hashed."""
        text = document[start:end]
        return cls(text=text, source=source, start=start, end=end, sha256=text_sha256(text), headings=headings)

    def embedding_text(self) -> str:
        """What is embedded: the text under its heading path, which names what a short section is about."""
        return f"{' > '.join(self.headings)}\n{self.text}" if self.headings else self.text

    def citation(self) -> str:
        """``source:start-end`` and the heading path, e.g. ``docs/a.md:120-480 (Intro > Setup)``."""
        where = f"{self.source}:{self.start}-{self.end}"
        return f"{where} ({' > '.join(self.headings)})" if self.headings else where

    def to_json(self) -> dict[str, Any]:
        return {"text": self.text, "source": self.source, "start": self.start, "end": self.end,
                "sha256": self.sha256, "headings": list(self.headings)}

    @classmethod
    def from_json(cls, item: dict[str, Any]) -> Chunk:
        return cls(text=item["text"], source=item["source"], start=item["start"], end=item["end"],
                   sha256=item["sha256"], headings=tuple(item["headings"]))


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
