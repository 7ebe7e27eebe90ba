"""``POST /v1/embeddings``: OpenAI's embeddings endpoint, answered by a :class:`specs.TextEmbedder`.

``input`` is one string or a list of them (at most :data:`MAX_INPUTS`, none empty); token-id inputs are refused
(the embedder reads text). A text longer than the embedder's ``max_tokens`` is truncated, as
sentence-transformers does (OpenAI refuses it instead). ``encoding_format`` ``float`` gives lists of numbers,
``base64`` the little-endian float32 bytes (what the official client asks for by default); ``dimensions`` is
accepted only at the model's own size. Embedding runs in one worker thread, one request at a time, so the
event loop stays free.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from pydantic import Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from serve.api_errors import APIError
from serve.api_routes import read_body
from serve.api_schema import _Body, parse_body
from specs.protocols import TextEmbedder

MAX_INPUTS = 2048  # OpenAI's limit on the texts of one request


class EmbeddingRequest(_Body):
    model: str
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = None


@dataclass
class ServedEmbedder:
    """An embedder served under ``name``; ``threads``: the intra-op threads of its worker (None: inherited)."""

    name: str
    embedder: TextEmbedder
    threads: int | None = None
    _pool: concurrent.futures.ThreadPoolExecutor | None = field(default=None, init=False, repr=False)

    def model_card(self) -> dict[str, Any]:
        return {"id": self.name, "object": "model", "created": 0, "owned_by": "lmplanes",
                "max_model_len": self.embedder.max_tokens}

    async def embed(self, texts: list[str]) -> tuple[torch.Tensor, int]:
        """The embeddings of ``texts`` and the tokens they were read as."""
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="embeddings",
                                                               initializer=self._take_threads)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._compute, texts)

    def _take_threads(self) -> None:
        if self.threads is not None:
            torch.set_num_threads(self.threads)

    def _compute(self, texts: list[str]) -> tuple[torch.Tensor, int]:
        return self.embedder.embed(texts), sum(self.embedder.count_tokens(texts))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)


def embedding_route(served: ServedEmbedder) -> Callable[[Request], Awaitable[Response]]:
    """The endpoint for ``served`` (a server without an embedder has no such URL)."""

    async def embeddings(request: Request) -> Response:
        body = parse_body(await read_body(request), EmbeddingRequest)
        if body.model != served.name:
            raise APIError(404, f"The model '{body.model}' does not exist; this server embeds with '{served.name}'.",
                           param="model", code="model_not_found")
        texts = _texts(body.input)
        dim = served.embedder.dim
        if body.dimensions is not None and body.dimensions != dim:
            raise APIError(400, f"dimensions must be {dim} for this model (it cannot shorten its embeddings)",
                           param="dimensions")
        vectors, tokens = await served.embed(texts)
        encoded = body.encoding_format == "base64"
        data = [{"object": "embedding", "index": i,
                 "embedding": base64.b64encode(row.numpy().astype("<f4").tobytes()).decode("ascii") if encoded
                 else row.tolist()} for i, row in enumerate(vectors)]
        return JSONResponse({"object": "list", "data": data, "model": served.name,
                             "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    return embeddings


def _texts(value: str | list[str] | list[int] | list[list[int]]) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if not items:
        raise APIError(400, "input must not be empty", param="input")
    if not all(isinstance(item, str) for item in items):
        raise APIError(400, "input must be a string or a list of strings: this server embeds text, not token ids",
                       param="input")
    if len(items) > MAX_INPUTS:
        raise APIError(400, f"input has {len(items)} texts, over the limit of {MAX_INPUTS}", param="input")
    texts = [item for item in items if isinstance(item, str)]
    if any(not text for text in texts):
        raise APIError(400, "input must not contain empty strings", param="input")
    return texts
