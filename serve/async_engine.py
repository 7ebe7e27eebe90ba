"""AsyncEngine: a :class:`serve.engine.Engine` driven by one worker thread, as a :class:`serve.backend.Backend`.

Only the worker touches the engine (and so the model). Requests and cancellations reach it through a queue it
reads between steps, so they join and leave at step boundaries; it waits on that queue only when the engine is
idle, and then gathers the requests that arrive close together (a few milliseconds) before its first step. Each token event is handed to the event loop of the request it belongs to as soon as its step ends, so
the loop stays free to accept connections and stream while the worker computes.

A consumer that stops early (``aclose()`` of the generator, or its task cancelled) sends a cancellation, which
frees the request's row and blocks before the next step. ``aclose`` on the backend lets every request already
submitted finish, then stops the worker.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field

from serve.backend import BackendClosed
from serve.cache_usage import CacheUsage
from serve.compute_thread import start_compute_thread
from serve.engine import Engine
from serve.events import TokenEvent
from specs.generation_config import GenerationConfig

GATHER_GAP_S = 0.002
"""An idle engine, woken by a request, also waits for the ones that follow within this gap of each other..."""
GATHER_MAX_S = 0.02
"""...but no longer than this in all: a lone request's first token comes at most this much later."""


@dataclass(eq=False)
class _Job:
    prompt_ids: list[int]
    cfg: GenerationConfig
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue[TokenEvent | Exception] = field(default_factory=asyncio.Queue)
    request_id: int = -1  # the engine's id, set by the worker when it submits the job

    def send(self, item: TokenEvent | Exception) -> bool:
        """Hand ``item`` to the request's event loop (from the worker); False when that loop is closed."""
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, item)
        except RuntimeError:
            return False
        return True


@dataclass(frozen=True, slots=True)
class _Cancel:
    job: _Job


class AsyncEngine:
    """Continuous batching behind the server's :class:`serve.backend.Backend` protocol: ``engine`` is driven
    by this object's worker thread from now on, and by nothing else. ``threads``: the worker's intra-op
    threads (default: as it inherits; see :mod:`serve.compute_thread`)."""

    def __init__(self, engine: Engine, *, threads: int | None = None) -> None:
        self.engine = engine
        self._inbox: queue.SimpleQueue[_Job | _Cancel | None] = queue.SimpleQueue()
        # Held while checking ``_closed`` and queueing, so no job can be queued behind the close.
        self._lock = threading.Lock()
        self._closed = False
        self._worker = start_compute_thread(self._work, name="lmplanes-engine", threads=threads)

    async def generate(self, prompt_ids: Sequence[int], cfg: GenerationConfig) -> AsyncGenerator[TokenEvent, None]:
        job = _Job(list(prompt_ids), cfg, asyncio.get_running_loop())
        with self._lock:
            if self._closed:
                raise BackendClosed("the server is shutting down and takes no new requests")
            self.engine.check_request(prompt_ids, cfg)  # refused here, in the caller, not in the worker
            self._inbox.put(job)
        finished = False
        try:
            while not finished:
                item = await job.events.get()
                if isinstance(item, Exception):
                    finished = True  # the worker already dropped the request
                    raise item
                finished = item.finish_reason is not None
                yield item
        finally:
            if not finished:  # the consumer stopped early: free the request's blocks
                self._inbox.put(_Cancel(job))

    def cache_usage(self) -> CacheUsage:
        """Blocks held, in tokens (a block is held whole), for ``/metrics``; read between steps without a lock
        (two integers, each read whole)."""
        stats, size = self.engine.stats, self.engine.cache.block_size
        return CacheUsage(tokens=stats.blocks_used * size, capacity=(stats.blocks_used + stats.blocks_free) * size)

    async def aclose(self) -> None:
        """Finish the requests already submitted, then stop the worker; ``generate`` refuses from now on."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._inbox.put(None)  # the worker's last item
        await asyncio.to_thread(self._worker.join)

    # --------------------------------------------------------------------------------------- worker thread

    def _work(self) -> None:
        jobs: dict[int, _Job] = {}
        try:
            self._serve(jobs)
        except Exception as exc:  # a fault of the engine itself: fail every request rather than leave it waiting
            with self._lock:
                self._closed = True
            for job in [*jobs.values(), *(i for i in self._arrivals(wait=False) if isinstance(i, _Job))]:
                job.send(exc)
            raise

    def _serve(self, jobs: dict[int, _Job]) -> None:
        closing = False
        while not closing or self.engine.has_work:
            # Idle: sleep until something arrives. Busy: take what arrived since the last step, without waiting.
            for item in self._arrivals(wait=not closing and not self.engine.has_work):
                if item is None:  # aclose: no job comes after this
                    closing = True
                elif isinstance(item, _Cancel):
                    if jobs.pop(item.job.request_id, None) is not None:
                        self.engine.cancel(item.job.request_id)
                else:
                    try:
                        item.request_id = self.engine.submit(item.prompt_ids, item.cfg)
                    except Exception as exc:  # this request fails; the worker goes on with the others
                        item.send(exc)
                        continue
                    jobs[item.request_id] = item
            if self.engine.has_work:
                self._step(jobs)

    def _arrivals(self, wait: bool) -> list[_Job | _Cancel | None]:
        """What has arrived. ``wait`` (the engine is idle): sleep until something does, then gather what follows
        it closely (:data:`GATHER_GAP_S` apart, for at most :data:`GATHER_MAX_S`), so that clients arriving
        together start in one prefill and decode in full steps instead of joining one step at a time."""
        items: list[_Job | _Cancel | None] = []
        if wait:
            items.append(self._inbox.get())
            deadline = time.monotonic() + GATHER_MAX_S
            while (left := deadline - time.monotonic()) > 0:
                try:
                    items.append(self._inbox.get(timeout=min(GATHER_GAP_S, left)))
                except queue.Empty:
                    break
        while True:
            try:
                items.append(self._inbox.get_nowait())
            except queue.Empty:
                return items

    def _step(self, jobs: dict[int, _Job]) -> None:
        try:
            events = self.engine.step()
        except Exception as exc:  # the model failed: every request in flight fails with it, the backend goes on
            for request_id, job in jobs.items():
                self.engine.cancel(request_id)
                job.send(exc)
            jobs.clear()
            return
        # One hand-over per event loop per step, not one per token: each wakes the loop's thread, which then
        # competes for the cores with the intra-op threads of the next step (measured through the server,
        # 16 clients on 2 cores: per-token hand-overs cost a fifth of the throughput).
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Job, TokenEvent]]] = {}
        for event in events:
            job = jobs[event.request_id]
            by_loop.setdefault(job.loop, []).append((job, event))
            if event.finish_reason is not None:
                del jobs[event.request_id]
        for loop, batch in by_loop.items():
            try:
                loop.call_soon_threadsafe(_deliver, batch)
            except RuntimeError:  # the loop is closed: nobody will read these requests
                for _job, event in batch:
                    if jobs.pop(event.request_id, None) is not None:
                        self.engine.cancel(event.request_id)


def _deliver(batch: list[tuple[_Job, TokenEvent]]) -> None:
    """On the requests' event loop: queue each event for its request."""
    for job, event in batch:
        job.events.put_nowait(event)
