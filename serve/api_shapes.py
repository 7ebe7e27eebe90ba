"""The response bodies of the two generation endpoints, whole and as stream chunks.

``/v1/completions`` answers ``text_completion`` objects (its chunks have the same shape, with text pieces);
``/v1/chat/completions`` answers a ``chat.completion`` with one assistant ``message`` per choice, and streams
``chat.completion.chunk`` objects whose ``delta`` opens with the role, then carries content pieces.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from serve.text_generation import TextDelta


@dataclass
class Answers:
    """What a request has produced so far: text, tokens and finish reason per choice."""

    kind: str  # "completion" or "chat"
    model: str
    prompt_tokens: int
    choices: int
    id: str = ""
    created: int = field(default_factory=lambda: int(time.time()))
    texts: list[list[str]] = field(init=False)
    tokens: list[int] = field(init=False)
    finish_reasons: list[str | None] = field(init=False)

    def __post_init__(self) -> None:
        self.id = self.id or f"{'chatcmpl' if self.kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex}"
        self.texts = [[] for _ in range(self.choices)]
        self.tokens = [0] * self.choices
        self.finish_reasons = [None] * self.choices

    def add(self, delta: TextDelta) -> None:
        self.texts[delta.index].append(delta.text)
        self.tokens[delta.index] = delta.tokens
        self.finish_reasons[delta.index] = delta.finish_reason

    @property
    def completion_tokens(self) -> int:
        return sum(self.tokens)

    def usage(self) -> dict[str, int]:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens}

    def response(self) -> dict[str, Any]:
        """The whole answer (a request that did not stream)."""
        choices = []
        for index, (pieces, reason) in enumerate(zip(self.texts, self.finish_reasons)):
            text = "".join(pieces)
            body = {"message": {"role": "assistant", "content": text}} if self.kind == "chat" else {"text": text}
            choices.append({"index": index, **body, "logprobs": None, "finish_reason": reason})
        return {**self._head(chunk=False), "choices": choices, "usage": self.usage()}

    def opening_chunks(self) -> list[dict[str, Any]]:
        """Chat streams open each choice with the role, as OpenAI's do."""
        if self.kind != "chat":
            return []
        return [self._chunk(index, {"role": "assistant", "content": ""}, None) for index in range(self.choices)]

    def chunk(self, delta: TextDelta) -> dict[str, Any]:
        if self.kind == "chat":
            return self._chunk(delta.index, {"content": delta.text} if delta.text else {}, delta.finish_reason)
        return self._chunk(delta.index, {"text": delta.text}, delta.finish_reason)

    def usage_chunk(self) -> dict[str, Any]:
        """The last chunk when the client asked for ``stream_options.include_usage``."""
        return {**self._head(chunk=True), "choices": [], "usage": self.usage()}

    def _chunk(self, index: int, content: dict[str, Any], reason: str | None) -> dict[str, Any]:
        body = {"delta": content} if self.kind == "chat" else content
        return {**self._head(chunk=True), "choices": [{"index": index, **body, "logprobs": None, "finish_reason": reason}]}

    def _head(self, *, chunk: bool) -> dict[str, Any]:
        kind = ("chat.completion.chunk" if chunk else "chat.completion") if self.kind == "chat" else "text_completion"
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model}


def sse(data: dict[str, Any] | str) -> str:
    """One server-sent event: ``data: JSON`` and a blank line (``[DONE]`` as it is)."""
    return f"data: {data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)}\n\n"
