"""Stopping a run cleanly on SIGINT/SIGTERM: the first signal asks the loop to checkpoint and stop after the
current step; a second SIGINT interrupts at once."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType


class StopRequest:
    def __init__(self) -> None:
        self.signal: str | None = None

    def __bool__(self) -> bool:
        return self.signal is not None


@contextlib.contextmanager
def stop_on_signals() -> Iterator[StopRequest]:
    """Yields a flag that turns true on SIGINT or SIGTERM. Handlers are installed only in the main thread (the
    only place Python delivers signals) and restored afterwards."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def handle(signum: int, frame: FrameType | None) -> None:
        if request and signum == signal.SIGINT:
            raise KeyboardInterrupt  # asked twice: stop now
        request.signal = signal.Signals(signum).name

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield request
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
