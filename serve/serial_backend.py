"""SerialBackend: :func:`serve.stream` for one request at a time, in one worker thread.

Requests queue in the order they arrive and the worker runs each to its end, handing every token to the
event loop of the request as it is made. Only the worker touches the model, so the event loop stays free to
accept connections and stream while a request decodes. A request whose consumer went away is dropped before
its next token (or before it starts, if it was still waiting), so the next request does not wait for tokens
nobody will read.
"""

from __future__ import annotations

import asyncio
import itertools
import queue
import threading
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import torch

from serve.backend import BackendClosed
from serve.cache_usage import CacheUsage
from serve.compute_thread import start_compute_thread
from serve.events import TokenEvent
from serve.generate import stream
from specs.generation_config import GenerationConfig
from specs.protocols import CausalLM


@dataclass(eq=False)
class _Job:
    request_id: int
    prompt_ids: list[int]
    cfg: GenerationConfig
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue[TokenEvent | Exception] = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)

    def send(self, item: TokenEvent | Exception) -> None:
        """Hand ``item`` to the request's event loop (called from the worker thread)."""
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody will read this request any more
            self.cancelled.set()


class SerialBackend:
    """A :class:`serve.backend.Backend` that decodes with :func:`serve.stream`, one request at a time, on
    ``device`` (where ``model`` lives), in a worker thread with ``threads`` intra-op threads (default: as it
    inherits; see :mod:`serve.compute_thread`)."""

    def __init__(self, model: CausalLM, *, device: torch.device | str = "cpu", threads: int | None = None) -> None:
        self.model = model
        self.device = torch.device(device)
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._request_ids = itertools.count()
        self._closed = False
        self._cached = 0  # tokens the running request holds in its KV cache (written by the worker only)
        self._worker = start_compute_thread(self._work, name="lmplanes-serial-backend", threads=threads)

    async def generate(self, prompt_ids: Sequence[int], cfg: GenerationConfig) -> AsyncIterator[TokenEvent]:
        if self._closed:
            raise BackendClosed("the server is shutting down and takes no new requests")
        if cfg.n != 1 or cfg.num_beams != 1 or cfg.stop:
            raise ValueError("a backend request is one sampled or greedy answer: n=1, num_beams=1, no stop strings")
        job = _Job(next(self._request_ids), list(prompt_ids), cfg, asyncio.get_running_loop())
        self._jobs.put(job)
        try:
            while True:
                item = await job.events.get()
                if isinstance(item, Exception):
                    raise item
                yield item
                if item.finish_reason is not None:
                    return
        finally:
            job.cancelled.set()  # the consumer stopped (or the request ended, when this changes nothing)

    def cache_usage(self) -> CacheUsage:
        """One request at a time: its prompt and answer so far, out of the model's context."""
        return CacheUsage(self._cached, self.model.config.max_seq_len)

    async def aclose(self) -> None:
        """Finish the requests already submitted, then stop the worker."""
        if not self._closed:
            self._closed = True
            self._jobs.put(None)
        await asyncio.to_thread(self._worker.join)

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            if job.cancelled.is_set():
                continue
            try:
                self._decode(job)
            except Exception as exc:  # the request fails; the backend goes on with the next one
                job.send(exc)

    def _decode(self, job: _Job) -> None:
        prompt = torch.tensor([job.prompt_ids], dtype=torch.long, device=self.device)
        eos = set(job.cfg.eos_token_ids)
        steps = stream(self.model, prompt, job.cfg)
        try:
            for count, column in enumerate(steps, start=1):
                self._cached = len(job.prompt_ids) + count - 1  # the newest token is not in the cache yet
                token = int(column[0])
                reason = "stop" if token in eos else "length" if count == job.cfg.max_new_tokens else None
                job.send(TokenEvent(job.request_id, token, reason))
                if job.cancelled.is_set():  # checked before the generator computes the next token
                    return
        finally:
            steps.close()
            self._cached = 0
