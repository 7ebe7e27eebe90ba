"""Errors as the OpenAI API writes them: ``{"error": {"message", "type", "param", "code"}}`` with a status."""

from __future__ import annotations

from typing import Any


class APIError(Exception):
    """A request the server answers with ``status`` and an OpenAI error body. ``param`` names the request field at
    fault; ``code`` is OpenAI's machine-readable reason where it has one (``model_not_found``,
    ``context_length_exceeded``, ``invalid_api_key`` ...)."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code

    @property
    def type(self) -> str:
        return "server_error" if self.status >= 500 else "invalid_request_error"

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}
