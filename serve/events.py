"""What a generation backend hands the server: one event per generated token.

Shared by every backend (the serial one here, the batching engine) and every consumer (the HTTP server, the
command line), so both sides agree on one small record.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TokenEvent:
    """One generated ``token`` of request ``request_id``. ``finish_reason`` is None while the request runs,
    ``"stop"`` on the token that is an end-of-sequence id, ``"length"`` on the ``max_new_tokens``-th token; the
    event that carries a finish reason is the request's last."""

    request_id: int
    token: int
    finish_reason: str | None
