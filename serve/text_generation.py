"""One answer as text: token events from a backend, detokenized incrementally and cut at stop strings.

The server and the command line read answers through :func:`generate_text`, so both stream the same text a
non-streaming request returns.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import cast

from serve.backend import Backend
from serve.detokenize import IncrementalDetokenizer, TextDecoder
from serve.events import TokenEvent
from serve.stop_strings import StopStrings
from specs.generation_config import GenerationConfig


@dataclass(frozen=True, slots=True)
class TextDelta:
    """What one more token of answer ``index`` added: ``text`` (often empty while a character or a possible stop
    string is incomplete), the answer's ``tokens`` so far, and on the last delta its ``finish_reason``:
    ``"stop"`` (an end-of-sequence token or a stop string) or ``"length"``."""

    index: int
    text: str
    tokens: int
    finish_reason: str | None = None


async def generate_text(
    backend: Backend,
    tokenizer: TextDecoder,
    prompt_ids: Sequence[int],
    cfg: GenerationConfig,
    *,
    stop: Sequence[str] = (),
    index: int = 0,
) -> AsyncGenerator[TextDelta, None]:
    """A delta per generated token. A stop string ends the answer before it (the text never shows any of it) and
    closes the backend's request, so no token is decoded past it; end-of-sequence tokens add no text."""
    detokenizer = IncrementalDetokenizer(tokenizer, prompt_ids)
    stops = StopStrings(stop)
    eos = set(cfg.eos_token_ids)
    tokens = 0
    # Backends are async generators (see serve.backend.Backend); closing one cancels its request.
    events = cast(AsyncGenerator[TokenEvent, None], backend.generate(prompt_ids, cfg))
    async with contextlib.aclosing(events):
        async for event in events:
            tokens += 1
            text = "" if event.token in eos else detokenizer.push(event.token)
            if event.finish_reason is not None:
                text += detokenizer.flush()
            released, stopped = stops.feed(text)
            if stopped:
                yield TextDelta(index, released, tokens, "stop")
                return
            if event.finish_reason is not None:
                yield TextDelta(index, released + stops.flush(), tokens, event.finish_reason)
                return
            yield TextDelta(index, released, tokens)
