"""How full a backend's KV cache is, for ``/metrics``.

An optional side of a :class:`serve.backend.Backend`: one that has a ``cache_usage()`` method is asked for it at
each scrape, and one without it simply has no cache figures. The serial backend holds one request's cache at
a time; a batching engine with a paged cache reports its blocks in tokens the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class CacheUsage:
    """``tokens``: positions held in the KV cache now; ``capacity``: the most it can hold at once."""

    tokens: int
    capacity: int

    @property
    def fraction(self) -> float:
        return self.tokens / self.capacity if self.capacity else 0.0


@runtime_checkable
class ReportsCacheUsage(Protocol):
    def cache_usage(self) -> CacheUsage: ...
