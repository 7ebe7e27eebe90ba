"""How an ``lmplanes serve`` process is set up, beside the model it serves."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """``api_key``: when set, every ``/v1`` request must send ``Authorization: Bearer KEY`` (``/health`` and
    ``/metrics`` stay open for probes and scrapers). ``max_tokens``: the most tokens one answer may ask for (None:
    as many as the context leaves). ``shutdown_timeout``: seconds a stop signal waits for requests in flight
    before it cancels them (None: as long as they take)."""

    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    max_tokens: int | None = None
    shutdown_timeout: int | None = 60

    def __post_init__(self) -> None:
        if self.api_key == "":
            raise ValueError("the API key must not be empty (leave it unset for a server without one)")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if self.shutdown_timeout is not None and self.shutdown_timeout < 0:
            raise ValueError(f"shutdown_timeout must be >= 0, got {self.shutdown_timeout}")
