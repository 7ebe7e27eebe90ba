"""Token ids to text, one token at a time, never emitting half a character.

A byte-level tokenizer can split one character over several tokens, and some tokenizers decode a token
differently at the start of a text (SentencePiece drops a leading space). So each new token is decoded in a
short window of the tokens before it, and text is released only when the window decodes to whole
characters: Hugging Face's ``TextStreamer`` and vLLM do the same. The window starts on the last few prompt
tokens, so the first generated token decodes as it does after the prompt.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

REPLACEMENT = "\ufffd"  # what a decoder writes for bytes that do not (yet) form a character
PROMPT_CONTEXT = 4  # prompt tokens the window starts on


class TextDecoder(Protocol):
    """What detokenizing needs from a tokenizer (``data.Tokenizer`` has it)."""

    @property
    def vocab_size(self) -> int: ...

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = False) -> str: ...


class IncrementalDetokenizer:
    """``push(token) -> new text``; ``flush() -> the rest`` at the end. Special tokens decode to nothing, and ids
    past the tokenizer's vocabulary (a model's embedding rows padded beyond it) are dropped."""

    def __init__(self, tokenizer: TextDecoder, prompt_ids: Sequence[int] = ()) -> None:
        self.tokenizer = tokenizer
        context = [t for t in prompt_ids[-PROMPT_CONTEXT:] if 0 <= t < tokenizer.vocab_size]
        if self._decode(context).endswith(REPLACEMENT):  # a prompt cut inside a character: start afresh
            context = []
        self.ids = context
        self.start = 0  # the window: ids[start:] is decoded, ids[start:read] was released already
        self.read = len(context)

    def push(self, token: int) -> str:
        if not 0 <= token < self.tokenizer.vocab_size:
            return ""
        self.ids.append(token)
        released = self._decode(self.ids[self.start:self.read])
        text = self._decode(self.ids[self.start:])
        if len(text) <= len(released) or text.endswith(REPLACEMENT):
            return ""  # nothing new yet, or a character still incomplete
        self.start, self.read = self.read, len(self.ids)
        return text[len(released):]

    def flush(self) -> str:
        """What is held back (a character cut by the end of generation decodes to U+FFFD)."""
        released = self._decode(self.ids[self.start:self.read])
        text = self._decode(self.ids[self.start:])
        self.start = self.read = len(self.ids)
        return text[len(released):]

    def _decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True) if ids else ""
