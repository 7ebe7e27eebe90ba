"""The OpenAI-compatible HTTP app (Starlette): routes, the API key, metrics, errors, and draining at shutdown.

Every failure a client can cause is an OpenAI error body with a 4xx status; anything else is a 500 with a
generic body (the details go to the server's log), and the server goes on serving.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from serve.api_errors import APIError
from serve.api_key import APIKeyMiddleware
from serve.api_routes import OpenAIRoutes
from serve.embeddings import ServedEmbedder, embedding_route
from serve.metrics import CONTENT_TYPE, Metrics, MetricsMiddleware
from serve.served_model import ServedModel
from serve.settings import ServerSettings

log = logging.getLogger(__name__)


def create_app(served: ServedModel, settings: ServerSettings | None = None, *,
               embedder: ServedEmbedder | None = None) -> Starlette:
    """The app serving ``served``, and ``/v1/embeddings`` with ``embedder``. At shutdown (after the server has
    let requests in flight finish) it closes the backend, which finishes what was submitted and stops."""
    settings = settings or ServerSettings()
    metrics = Metrics(served.backend)
    api = OpenAIRoutes(served, settings, metrics, () if embedder is None else (embedder.model_card(),))

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "model": served.name})

    async def metrics_page(request: Request) -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await served.backend.aclose()
        if embedder is not None:
            embedder.close()

    routes = [
        Route("/v1/completions", api.completions, methods=["POST"]),
        Route("/v1/chat/completions", api.chat, methods=["POST"]),
        Route("/v1/models", api.models, methods=["GET"]),
        Route("/v1/models/{model:path}", api.model, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/metrics", metrics_page, methods=["GET"]),
    ]
    if embedder is not None:  # without one, /v1/embeddings is an unknown URL, as on OpenAI-style servers without it
        routes.append(Route("/v1/embeddings", embedding_route(embedder), methods=["POST"]))
    return Starlette(
        routes=routes,
        middleware=[Middleware(MetricsMiddleware, metrics=metrics), Middleware(APIKeyMiddleware, api_key=settings.api_key)],
        exception_handlers={APIError: _api_error, HTTPException: _http_error, Exception: _internal_error},
        lifespan=lifespan,
    )


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, APIError)
    return JSONResponse(exc.body(), status_code=exc.status)


async def _http_error(request: Request, exc: Exception) -> Response:
    """Routing's own refusals (no such URL, wrong method) in OpenAI's shape."""
    assert isinstance(exc, HTTPException)
    what = f"{request.method} {request.url.path}"
    if exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        error = APIError(405, f"Method not allowed: {what} (allowed: {allowed}).", code="method_not_allowed")
    elif exc.status_code == 404:
        error = APIError(404, f"Invalid URL ({what}).", code="unknown_url")
    else:
        error = APIError(exc.status_code, str(exc.detail))
    return JSONResponse(error.body(), status_code=error.status, headers=exc.headers)


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.error("request %s %s failed", request.method, request.url.path, exc_info=exc)
    return JSONResponse(APIError(500, "The server had an error while processing the request.").body(), status_code=500)
