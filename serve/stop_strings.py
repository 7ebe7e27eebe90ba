"""Stop strings on streamed text: cut at the first one, and never release text that may begin one.

Text arrives piece by piece; a stop string can span pieces. What could still become a stop string (the
longest end of the text that is the start of one) is held back until the next piece decides it, so a
streaming client never sees any part of a stop string, and the text it sees is what a non-streaming client
gets.
"""

from __future__ import annotations

from collections.abc import Sequence


class StopStrings:
    """``feed(text) -> (text to release, stopped)``; after the end of generation, ``flush()`` releases the rest."""

    def __init__(self, stops: Sequence[str]) -> None:
        if any(not s for s in stops):
            raise ValueError("stop strings must not be empty")
        self.stops = tuple(stops)
        self.pending = ""

    def feed(self, text: str) -> tuple[str, bool]:
        self.pending += text
        found = [i for i in (self.pending.find(s) for s in self.stops) if i >= 0]
        if found:
            released, self.pending = self.pending[: min(found)], ""
            return released, True
        keep = self._partial_stop()
        released = self.pending[: len(self.pending) - keep]
        self.pending = self.pending[len(released):]
        return released, False

    def flush(self) -> str:
        released, self.pending = self.pending, ""
        return released

    def _partial_stop(self) -> int:
        """Length of the longest end of the pending text that a stop string starts with."""
        for size in range(min(len(self.pending), max((len(s) for s in self.stops), default=1) - 1), 0, -1):
            tail = self.pending[-size:]
            if any(s.startswith(tail) for s in self.stops):
                return size
        return 0
