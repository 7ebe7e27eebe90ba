"""The generation backend behind the server: one prompt in, token events out.

A backend decodes; everything about text (detokenizing, stop strings, ``n`` answers, chat templates) is the
caller's. The serial backend (:class:`serve.serial_backend.SerialBackend`) runs one request at a time; a
batching engine plugs in with the same two methods.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Protocol

from serve.events import TokenEvent
from specs.generation_config import GenerationConfig


class BackendClosed(RuntimeError):
    """The backend is shutting down and takes no new requests."""


class Backend(Protocol):
    """Decodes one prompt (``n == 1``, no stop strings: ``cfg.stop`` must be empty) into token events.

    ``generate`` is an async generator: events come as tokens are made and the last one carries the finish
    reason. A consumer that stops early closes it (``aclose()``, or the cancellation of the task iterating it),
    which cancels the request and frees what it held. ``aclose`` lets requests already submitted finish, then
    stops the backend; ``generate`` raises :class:`BackendClosed` after it was called.
    """

    # Declared without ``async``: an ``async def`` with ``yield`` is called without awaiting and returns the
    # iterator, which is what this signature says (an ``async def`` here would promise a coroutine).
    def generate(self, prompt_ids: Sequence[int], cfg: GenerationConfig) -> AsyncIterator[TokenEvent]: ...

    async def aclose(self) -> None: ...
