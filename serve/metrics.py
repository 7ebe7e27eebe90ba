"""The server's Prometheus metrics (``GET /metrics``, text exposition format).

Each app has its own registry, so several servers in one process (tests) never share counts. Requests are
counted by endpoint and status by an ASGI middleware, which also times them to the last byte of the
response (a stream's end); the generation code adds tokens, the time to the first token and the requests
whose client went away; a backend that reports its KV cache adds how full it is.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serve.backend import Backend
from serve.cache_usage import ReportsCacheUsage

ENDPOINTS = ("/v1/completions", "/v1/chat/completions", "/v1/models", "/health", "/metrics")
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    """``backend``: where the KV cache figures come from, when it reports them (see serve.cache_usage)."""

    def __init__(self, backend: Backend | None = None) -> None:
        self.registry = CollectorRegistry()
        known: dict[str, Any] = {"registry": self.registry}
        self.requests = Counter("lmplanes_requests", "HTTP requests by endpoint and status", ["endpoint", "status"], **known)
        self.request_seconds = Histogram("lmplanes_request_duration_seconds", "Time from a request to the end of its "
                                         "response", ["endpoint"], buckets=_LATENCY_BUCKETS, **known)
        self.first_token_seconds = Histogram("lmplanes_time_to_first_token_seconds", "Time from a generation request "
                                             "to its first generated token", ["endpoint"], buckets=_LATENCY_BUCKETS, **known)
        self.prompt_tokens = Counter("lmplanes_prompt_tokens", "Prompt tokens of generation requests", **known)
        self.completion_tokens = Counter("lmplanes_completion_tokens", "Tokens generated (those of cancelled "
                                         "requests included)", **known)
        self.cancelled = Counter("lmplanes_requests_cancelled", "Generation requests cancelled because the client "
                                 "went away", ["endpoint"], **known)
        self.in_flight = Gauge("lmplanes_requests_in_flight", "Requests being answered", **known)
        if isinstance(backend, ReportsCacheUsage):  # read at each scrape
            reporter = backend
            Gauge("lmplanes_kv_cache_tokens", "Tokens held in the KV cache", **known).set_function(
                lambda: reporter.cache_usage().tokens)
            Gauge("lmplanes_kv_cache_capacity_tokens", "The most tokens the KV cache holds at once", **known).set_function(
                lambda: reporter.cache_usage().capacity)
            Gauge("lmplanes_kv_cache_usage", "Fraction of the KV cache in use (0 to 1)", **known).set_function(
                lambda: reporter.cache_usage().fraction)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def endpoint_label(path: str) -> str:
    """The route a path belongs to (a bounded set of label values, whatever paths clients try)."""
    if path.startswith("/v1/models/"):
        return "/v1/models"
    return path if path in ENDPOINTS else "other"


class MetricsMiddleware:
    """Counts every HTTP request by endpoint and status and times it to the end of its response."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        endpoint = endpoint_label(scope["path"])
        status = 500  # what the client sees if the app fails before it answers (the server's error page)
        start = time.perf_counter()

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_and_note)
        finally:
            self.metrics.in_flight.dec()
            self.metrics.requests.labels(endpoint, str(status)).inc()
            self.metrics.request_seconds.labels(endpoint).observe(time.perf_counter() - start)
