"""Several async iterators read as one: each item as soon as it is ready, in order within its source.

The ``n`` answers of a request (and the prompts of a batch) run as separate backend requests; the server
reads them through this, so a batching backend can decode them together while a serial one runs them in turn.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence
from typing import TypeVar

T = TypeVar("T")


async def interleave(sources: Sequence[AsyncGenerator[T, None]]) -> AsyncGenerator[T, None]:
    """Closing (or cancelling) the interleaved iterator cancels the pending reads and closes every source; an
    error in one source closes the others and propagates."""
    waiting: dict[asyncio.Future[T], AsyncGenerator[T, None]] = {asyncio.ensure_future(anext(s)): s for s in sources}
    try:
        while waiting:
            done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            for future in done:
                source = waiting.pop(future)
                try:
                    item = future.result()
                except StopAsyncIteration:
                    continue
                waiting[asyncio.ensure_future(anext(source))] = source
                yield item
    finally:
        for future in waiting:
            future.cancel()
        # A source can only be closed once its pending read has finished unwinding.
        await asyncio.gather(*waiting, return_exceptions=True)
        for source in sources:
            await source.aclose()
