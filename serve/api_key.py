"""The optional API key: ``Authorization: Bearer KEY`` on every ``/v1`` request, compared in constant time."""

from __future__ import annotations

import hmac

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from serve.api_errors import APIError

PROTECTED = "/v1/"


class APIKeyMiddleware:
    """Answers 401 to a ``/v1`` request without the key; everything else passes (``api_key`` None: all)."""

    def __init__(self, app: ASGIApp, api_key: str | None) -> None:
        self.app = app
        self.key = None if api_key is None else api_key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.key is not None and scope["type"] == "http" and scope["path"].startswith(PROTECTED):
            problem = self._problem(Headers(scope=scope).get("authorization"))
            if problem is not None:
                response = JSONResponse(problem.body(), status_code=401, headers={"WWW-Authenticate": "Bearer"})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _problem(self, header: str | None) -> APIError | None:
        assert self.key is not None
        scheme, _, token = (header or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return APIError(401, "You didn't provide an API key. Send it in an Authorization header: 'Bearer KEY'.")
        if not hmac.compare_digest(token.strip().encode(), self.key):
            return APIError(401, "Incorrect API key provided.", code="invalid_api_key")
        return None
