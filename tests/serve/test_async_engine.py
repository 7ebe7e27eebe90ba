"""serve.AsyncEngine as the server's Backend: concurrent requests stream the tokens ``serve.generate`` gives
each prompt alone; a consumer that stops early (closing the generator, or its task cancelled) cancels its
request and frees its blocks; ``aclose`` lets submitted requests finish, and ``generate`` refuses afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace

import pytest
import torch

import model
import serve
import specs
from serve.async_engine import AsyncEngine
from serve.backend import Backend, BackendClosed
from serve.engine import Engine
from serve.events import TokenEvent
from specs import GenerationConfig
from tests.serve.counting import CountingForwards

GREEDY = GenerationConfig(max_new_tokens=10)
LONG = replace(GREEDY, max_new_tokens=100)  # runs far longer than the tests wait for


@pytest.fixture(scope="module")
def lm() -> torch.nn.Module:
    cfg = specs.apply_overrides(specs.load_preset("llama-tiny"), ["init_std=0.1"])
    torch.manual_seed(0)
    return model.build(cfg).eval()


def _backend(lm) -> AsyncEngine:
    return AsyncEngine(Engine(lm, max_batch=3, max_len=120, block_size=4))


def _prompt(length: int, seed: int) -> list[int]:
    return torch.randint(3, 256, (length,), generator=torch.Generator().manual_seed(seed)).tolist()


async def _collect(backend: Backend, prompt: list[int], cfg: GenerationConfig) -> list[TokenEvent]:
    return [event async for event in backend.generate(prompt, cfg)]


async def _idle(backend: AsyncEngine, timeout: float = 30.0) -> None:
    """Wait until the worker has processed what was sent (cancellations included)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while backend.engine.has_work:
        assert loop.time() < deadline, f"the engine is still busy: {backend.engine.stats}"
        await asyncio.sleep(0.01)


def test_concurrent_requests_stream_what_generate_gives_each_alone(lm) -> None:
    prompts = [_prompt(n, seed=n) for n in (4, 9, 6, 12, 3)]  # five requests over three rows: some wait

    async def main() -> list[list[TokenEvent]]:
        backend: Backend = _backend(lm)
        try:
            return await asyncio.gather(*(_collect(backend, p, GREEDY) for p in prompts))
        finally:
            await backend.aclose()

    for prompt, events in zip(prompts, asyncio.run(main())):
        alone = serve.generate(lm, torch.tensor([prompt]), GREEDY)[0, len(prompt) :].tolist()
        assert [e.token for e in events] == alone
        assert [e.finish_reason for e in events] == [None] * 9 + ["length"]
        assert len({e.request_id for e in events}) == 1


def test_requests_arriving_together_at_an_idle_engine_start_in_one_prefill(lm) -> None:
    """The worker, woken by the first of three requests sent together, gathers the other two before its first
    step: one forward prefills all three (then only decode steps of three rows)."""
    counting = CountingForwards(lm)
    engine = Engine(counting, max_batch=3, max_len=120, block_size=4)
    prompts = [_prompt(n, seed=30 + n) for n in (5, 8, 3)]

    async def main() -> list[list[TokenEvent]]:
        backend = AsyncEngine(engine)
        try:
            return await asyncio.gather(*(_collect(backend, p, GREEDY) for p in prompts))
        finally:
            await backend.aclose()

    results = asyncio.run(main())
    assert counting.shapes[0] == (3, 8) and all(shape == (3, 1) for shape in counting.shapes[1:])
    for prompt, events in zip(prompts, results):
        assert [e.token for e in events] == serve.generate(lm, torch.tensor([prompt]), GREEDY)[0, len(prompt):].tolist()


def test_a_consumer_that_stops_early_cancels_its_request_and_frees_its_blocks(lm) -> None:
    async def main() -> None:
        backend = _backend(lm)
        async with contextlib.aclosing(backend.generate(_prompt(5, 1), LONG)) as events:
            async for event in events:
                assert event.finish_reason is None
                break  # the consumer goes away after one token
        await _idle(backend)
        assert backend.engine.stats.cancelled == 1

        first = asyncio.Event()

        async def reader() -> None:
            async for _ in backend.generate(_prompt(6, 2), LONG):
                first.set()

        task = asyncio.create_task(reader())
        await first.wait()
        task.cancel()  # e.g. the HTTP client disconnected
        with pytest.raises(asyncio.CancelledError):
            await task
        await _idle(backend)
        stats = backend.engine.stats
        assert (stats.cancelled, stats.running, stats.blocks_free) == (2, 0, backend.engine.cache.blocks_total)
        # The backend goes on serving.
        assert len(await _collect(backend, _prompt(3, 3), GREEDY)) == GREEDY.max_new_tokens
        await backend.aclose()

    asyncio.run(main())


def test_aclose_lets_submitted_requests_finish_then_refuses_new_ones(lm) -> None:
    async def main() -> None:
        backend = _backend(lm)
        running = asyncio.create_task(_collect(backend, _prompt(7, 4), GREEDY))
        await asyncio.sleep(0)  # the request is submitted
        await backend.aclose()
        events = await running
        assert len(events) == GREEDY.max_new_tokens and events[-1].finish_reason == "length"
        with pytest.raises(BackendClosed, match="shutting down"):
            await _collect(backend, _prompt(3, 5), GREEDY)
        await backend.aclose()  # a second close is harmless

    asyncio.run(main())


def test_a_request_it_could_never_run_is_refused_in_the_caller(lm) -> None:
    async def main() -> None:
        backend = _backend(lm)
        with pytest.raises(ValueError, match="over the engine's max_len 120"):
            await _collect(backend, _prompt(30, 6), LONG)
        with pytest.raises(ValueError, match="n=1, num_beams=1, no stop strings"):
            await _collect(backend, _prompt(3, 6), replace(GREEDY, stop=("x",)))
        await backend.aclose()

    asyncio.run(main())


def test_a_failed_step_fails_the_requests_in_flight_and_the_backend_goes_on(lm) -> None:
    async def main() -> None:
        backend = _backend(lm)
        engine = backend.engine
        real_step = engine.step

        def fail_once() -> list[TokenEvent]:
            engine.step = real_step  # type: ignore[method-assign]
            raise RuntimeError("the model failed")

        engine.step = fail_once  # type: ignore[method-assign]
        with pytest.raises(RuntimeError, match="the model failed"):
            await _collect(backend, _prompt(5, 7), GREEDY)
        assert not engine.has_work and engine.stats.blocks_free == engine.cache.blocks_total
        assert len(await _collect(backend, _prompt(5, 7), GREEDY)) == GREEDY.max_new_tokens
        await backend.aclose()

    asyncio.run(main())


def test_a_request_the_engine_refuses_in_the_worker_fails_alone(lm, monkeypatch) -> None:
    """An error raised while the worker submits a request (past the caller's checks) fails that request only:
    the worker lives on and serves the next one."""
    backend = _backend(lm)
    submit = backend.engine.submit

    def refuse_short_prompts(prompt_ids, cfg):
        if len(prompt_ids) < 3:
            raise ValueError("refused in the worker")
        return submit(prompt_ids, cfg)

    monkeypatch.setattr(backend.engine, "submit", refuse_short_prompts)

    async def main() -> list[TokenEvent]:
        with pytest.raises(ValueError, match="refused in the worker"):
            await _collect(backend, _prompt(2, seed=1), GREEDY)
        events = await _collect(backend, _prompt(5, seed=2), GREEDY)
        await backend.aclose()
        return events

    events = asyncio.run(asyncio.wait_for(main(), timeout=120))
    assert len(events) == GREEDY.max_new_tokens and events[-1].finish_reason == "length"


def test_seeds_outside_what_torch_takes_are_refused_up_front() -> None:
    with pytest.raises(ValueError, match=r"seed: must be in \[0, 2\*\*64 - n\]"):
        GenerationConfig(max_new_tokens=4, do_sample=True, seed=2**64)
    with pytest.raises(ValueError, match="seed"):
        GenerationConfig(max_new_tokens=4, do_sample=True, seed=-1)
    assert GenerationConfig(max_new_tokens=4, do_sample=True, n=2, seed=2**64 - 2).seed == 2**64 - 2
