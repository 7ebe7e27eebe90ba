"""What the server and the text commands serve: a backend that decodes, and the text side of one model."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from data.tokenizer import Tokenizer
from serve.backend import Backend
from serve.chat_template import ChatTemplate
from serve.text_generation import generate_text
from specs.generation_config import GenerationConfig


@dataclass(frozen=True)
class ServedModel:
    """``name`` is what clients ask for (``model`` in a request); ``context_len`` bounds prompt plus answer;
    ``vocab_size`` is the model's (token ids a client sends must be below it)."""

    name: str
    backend: Backend
    tokenizer: Tokenizer
    chat_template: ChatTemplate
    context_len: int
    vocab_size: int

    @property
    def eos_token_ids(self) -> tuple[int, ...]:
        eos = self.tokenizer.eos_id
        return () if eos is None else (eos,)

    def encode(self, text: str) -> list[int]:
        """The prompt's token ids, as written: no special tokens are added (a template writes its own)."""
        return self.tokenizer.encode(text)

    def encode_chat(self, messages: Sequence[Mapping[str, Any]]) -> list[int]:
        """The token ids of ``messages`` rendered by the chat template, with the assistant's turn opened."""
        return self.encode(self.chat_template.render(messages))

    def chat(self, messages: Sequence[Mapping[str, str]], cfg: GenerationConfig, *, stop: Sequence[str] = ()) -> str:
        """The assistant's whole reply to ``messages`` (a :class:`specs.ChatGenerator`), generated through the
        backend and ending before any ``stop`` string. Blocking: for callers outside an event loop."""

        async def reply() -> str:
            deltas = generate_text(self.backend, self.tokenizer, self.encode_chat(messages), cfg, stop=stop)
            async with contextlib.aclosing(deltas):
                return "".join([delta.text async for delta in deltas])

        return asyncio.run(reply())
