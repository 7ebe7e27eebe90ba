"""Answer a question from retrieved passages with a chat model (any :class:`specs.ChatGenerator`; ``pack`` serves
one through ``serve``), and say which passages the answer cites.

The prompt numbers the passages (``[1]``, ``[2]`` ...) with their sources and asks for an answer from them only,
citing by number; the answer's citations are the numbers it mentions that name a passage.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from rag.store import Hit
from specs.generation_config import GenerationConfig
from specs.protocols import ChatGenerator

INSTRUCTIONS = ("Answer the question using only the numbered passages below. Cite the passages you use by their "
                "number in square brackets, like [1]. If the passages do not contain the answer, say that you do "
                "not know.")
_CITATION = re.compile(r"\[(\d+)\]")


@dataclass(frozen=True, slots=True)
class Answer:
    """The generated ``text``, the ``passages`` it was given (passage ``n`` is ``passages[n - 1]``) and the
    passage numbers it ``cites``, in order of first mention."""

    text: str
    passages: tuple[Hit, ...]
    cites: tuple[int, ...]


def build_messages(question: str, passages: Sequence[Hit]) -> list[dict[str, str]]:
    """The chat messages: the instructions, then the numbered passages with their sources and the question."""
    blocks = [f"[{n}] (source: {hit.chunk.citation()})\n{hit.chunk.text}" for n, hit in enumerate(passages, start=1)]
    user = "Passages:\n\n" + "\n\n".join(blocks) + f"\n\nQuestion: {question}"
    return [{"role": "system", "content": INSTRUCTIONS}, {"role": "user", "content": user}]


def citations(text: str, count: int) -> tuple[int, ...]:
    """The passage numbers (1 to ``count``) ``text`` cites as ``[n]``, each once, in order of first mention."""
    found = (int(n) for n in _CITATION.findall(text))
    return tuple(dict.fromkeys(n for n in found if 1 <= n <= count))


def answer(generator: ChatGenerator, question: str, passages: Sequence[Hit], cfg: GenerationConfig, *,
           stop: Sequence[str] = ()) -> Answer:
    """Generate the answer to ``question`` from ``passages`` (greedy unless ``cfg`` samples), ending before any
    ``stop`` string."""
    text = generator.chat(build_messages(question, passages), cfg, stop=stop).strip()
    return Answer(text, tuple(passages), citations(text, len(passages)))
