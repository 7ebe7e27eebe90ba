"""The OpenAI endpoints: ``POST /v1/completions``, ``POST /v1/chat/completions``, ``GET /v1/models``.

A request becomes one prompt per choice (``n`` per prompt, each with its own seed, ``seed + k`` for choice
``k`` when a seed is given), each read as text through :func:`serve.generate_text`, all interleaved. A client
that goes away cancels its choices, streaming or not: their backend requests are closed before their next
token.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Coroutine
from typing import Any, TypeVar, cast

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from data.errors import DataError
from serve.api_errors import APIError
from serve.api_schema import MAX_BODY_BYTES, ChatRequest, CompletionRequest, parse_body
from serve.api_shapes import Answers, sse
from serve.backend import BackendClosed
from serve.chat_template import ChatTemplateError
from serve.interleave import interleave
from serve.metrics import Metrics
from serve.sampling import sampling_config
from serve.served_model import ServedModel
from serve.settings import ServerSettings
from serve.text_generation import TextDelta, generate_text
from specs.config_io import FieldProblem
from specs.generation_config import GenerationConfig

log = logging.getLogger(__name__)

MAX_CHOICES = 64  # prompts times n, per request
COMPLETION_DEFAULT_MAX_TOKENS = 16  # OpenAI's default for /v1/completions (chat answers run to the context)
CLIENT_CLOSED = 499  # the status nginx logs for a client that closed the request; it is never sent

T = TypeVar("T")


class OpenAIRoutes:
    """``other_models``: the cards of other models the server answers for (an embedding model), listed by
    ``/v1/models`` after the generator's."""

    def __init__(self, served: ServedModel, settings: ServerSettings, metrics: Metrics,
                 other_models: tuple[dict[str, Any], ...] = ()) -> None:
        self.served = served
        self.settings = settings
        self.metrics = metrics
        self.other_models = other_models

    async def completions(self, request: Request) -> Response:
        body = parse_body(await read_body(request), CompletionRequest)
        self._check_model(body.model)
        prompts = self._completion_prompts(body.prompt)
        return await self._answer(request, "completion", body, prompts, body.max_tokens, "prompt")

    async def chat(self, request: Request) -> Response:
        body = parse_body(await read_body(request), ChatRequest)
        self._check_model(body.model)
        try:
            ids = self.served.encode_chat([m.for_template() for m in body.messages])
        except (ChatTemplateError, DataError) as exc:
            raise APIError(400, str(exc), param="messages") from None
        return await self._answer(request, "chat", body, [ids], body.answer_limit, "messages")

    async def models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [self._model_card(), *self.other_models]})

    async def model(self, request: Request) -> Response:
        name = request.path_params["model"]
        other = next((card for card in self.other_models if card["id"] == name), None)
        if other is not None:
            return JSONResponse(other)
        self._check_model(name)
        return JSONResponse(self._model_card())

    # ------------------------------------------------------------------------------------------------ checks

    def _model_card(self) -> dict[str, Any]:
        return {"id": self.served.name, "object": "model", "created": 0, "owned_by": "lmplanes",
                "max_model_len": self.served.context_len}

    def _check_model(self, name: str) -> None:
        if name != self.served.name:
            raise APIError(404, f"The model '{name}' does not exist; this server serves '{self.served.name}'.",
                           param="model", code="model_not_found")

    def _completion_prompts(self, prompt: str | list[str] | list[int] | list[list[int]]) -> list[list[int]]:
        single = isinstance(prompt, str) or (bool(prompt) and isinstance(prompt[0], int))
        # The schema admits only these four shapes: one string or one list of ids, or a list of either.
        items = cast(list[str | list[int]], [prompt] if single else prompt)
        if not items:
            raise APIError(400, "prompt must not be empty", param="prompt")
        prompts = []
        for item in items:
            if isinstance(item, str):
                try:
                    item = self.served.encode(item)
                except DataError as exc:
                    raise APIError(400, str(exc), param="prompt") from None
            if not item:
                raise APIError(400, "prompt must not be empty: give at least one token", param="prompt")
            outside = [t for t in item if not 0 <= t < self.served.vocab_size]
            if outside:
                raise APIError(400, f"token id {outside[0]} is outside the model's vocabulary (0 to "
                               f"{self.served.vocab_size - 1})", param="prompt")
            prompts.append(item)
        return prompts

    def _max_new_tokens(self, prompts: list[list[int]], requested: int | None, default: int | None, param: str) -> int:
        context = self.served.context_len
        longest = max(len(p) for p in prompts)
        cap = self.settings.max_tokens
        if requested is not None:
            if cap is not None and requested > cap:
                raise APIError(400, f"max_tokens is {requested}, over this server's limit of {cap}", param="max_tokens")
            if longest + requested > context:
                raise APIError(400, f"This model's maximum context length is {context} tokens. However, you requested "
                               f"{longest + requested} tokens ({longest} in the {param}, {requested} for the "
                               "completion). Please reduce the length of the prompt or the completion.",
                               param=param, code="context_length_exceeded")
            return requested
        room = context - longest
        if room < 1:
            raise APIError(400, f"This model's maximum context length is {context} tokens, and the {param} has "
                           f"{longest}: no room is left for an answer. Please shorten it.",
                           param=param, code="context_length_exceeded")
        return min(limit for limit in (default, room, cap) if limit is not None)

    def _config(self, body: CompletionRequest | ChatRequest, max_new_tokens: int) -> GenerationConfig:
        try:
            return sampling_config(
                max_new_tokens=max_new_tokens,
                temperature=1.0 if body.temperature is None else body.temperature,
                top_p=body.top_p,
                top_k=body.top_k,
                min_p=body.min_p,
                repetition_penalty=1.0 if body.repetition_penalty is None else body.repetition_penalty,
                frequency_penalty=body.frequency_penalty or 0.0,
                presence_penalty=body.presence_penalty or 0.0,
                seed=body.seed,
                eos_token_ids=self.served.eos_token_ids,
            )
        except FieldProblem as exc:
            raise APIError(400, str(exc), param=exc.field) from None

    # ----------------------------------------------------------------------------------------------- answers

    async def _answer(self, request: Request, kind: str, body: CompletionRequest | ChatRequest,
                      prompts: list[list[int]], requested: int | None, param: str) -> Response:
        n = body.n or 1
        if len(prompts) * n > MAX_CHOICES:
            raise APIError(400, f"{len(prompts)} prompts times n={n} is {len(prompts) * n} answers, over this "
                           f"server's limit of {MAX_CHOICES} per request", param="n")
        if body.stream_options is not None and not body.stream:
            raise APIError(400, "stream_options is only allowed when stream is true", param="stream_options")
        default = COMPLETION_DEFAULT_MAX_TOKENS if kind == "completion" else None
        cfg = self._config(body, self._max_new_tokens(prompts, requested, default, param))
        stop = body.stop_strings
        answers = Answers(kind, self.served.name, sum(len(p) for p in prompts), len(prompts) * n)
        runs = [
            self._run(prompt, cfg, stop, seed=None if body.seed is None else body.seed + k, index=k)
            for k, prompt in enumerate(p for p in prompts for _ in range(n))
        ]
        self.metrics.prompt_tokens.inc(answers.prompt_tokens)
        tally = _Tally(self.metrics, request.url.path, answers)
        if body.stream:
            include_usage = body.stream_options is not None and body.stream_options.include_usage
            return StreamingResponse(self._events(runs, tally, include_usage), media_type="text/event-stream")
        try:
            await _unless_client_leaves(request, tally.collect(runs))
        except _ClientLeft:
            return Response(status_code=CLIENT_CLOSED)
        except BackendClosed as exc:
            raise APIError(503, str(exc)) from None
        return JSONResponse(answers.response())

    def _run(self, prompt: list[int], cfg: GenerationConfig, stop: tuple[str, ...], *, seed: int | None,
             index: int) -> AsyncGenerator[TextDelta, None]:
        choice_cfg = cfg if seed == cfg.seed else dataclasses.replace(cfg, seed=seed)
        return generate_text(self.served.backend, self.served.tokenizer, prompt, choice_cfg, stop=stop, index=index)

    async def _events(self, runs: list[AsyncGenerator[TextDelta, None]], tally: _Tally, include_usage: bool) -> AsyncIterator[str]:
        answers = tally.answers
        for chunk in answers.opening_chunks():
            yield sse(chunk)
        try:
            async with tally.reading(runs) as deltas:
                async for delta in deltas:
                    tally.add(delta)
                    if delta.text or delta.finish_reason:
                        yield sse(answers.chunk(delta))
        except APIError as exc:
            yield sse(exc.body())
        except BackendClosed as exc:
            yield sse(APIError(503, str(exc)).body())
        except Exception:  # the stream has begun: the error goes in it, and the server goes on
            log.exception("a streamed answer failed")
            yield sse(APIError(500, "The server failed while generating this answer.").body())
        else:
            if include_usage:
                yield sse(answers.usage_chunk())
        yield sse("[DONE]")


class _Tally:
    """Reads a request's interleaved answers into :class:`Answers`, and records its tokens, its time to the first
    token and, when its client went away, its cancellation."""

    def __init__(self, metrics: Metrics, endpoint: str, answers: Answers) -> None:
        self.metrics = metrics
        self.endpoint = endpoint
        self.answers = answers
        self.start = time.perf_counter()
        self.started = False

    @contextlib.asynccontextmanager
    async def reading(self, runs: list[AsyncGenerator[TextDelta, None]]) -> AsyncIterator[AsyncIterator[TextDelta]]:
        try:
            async with contextlib.aclosing(interleave(runs)) as merged:
                yield merged
        except (asyncio.CancelledError, GeneratorExit):  # the client went away (or the server gave up on it)
            self.metrics.cancelled.labels(self.endpoint).inc()
            raise
        finally:
            self.metrics.completion_tokens.inc(self.answers.completion_tokens)

    def add(self, delta: TextDelta) -> None:
        if not self.started:
            self.started = True
            self.metrics.first_token_seconds.labels(self.endpoint).observe(time.perf_counter() - self.start)
        self.answers.add(delta)

    async def collect(self, runs: list[AsyncGenerator[TextDelta, None]]) -> None:
        async with self.reading(runs) as deltas:
            async for delta in deltas:
                self.add(delta)


class _ClientLeft(Exception):
    pass


async def _unless_client_leaves(request: Request, work: Coroutine[Any, Any, T]) -> T:
    """``work``'s result, or :class:`_ClientLeft` after cancelling it when the client disconnects first."""
    task = asyncio.ensure_future(work)
    left = asyncio.ensure_future(_disconnect(request))
    try:
        await asyncio.wait({task, left}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        left.cancel()
        task.cancel()  # a no-op once it is done
        await asyncio.gather(task, left, return_exceptions=True)
    if task.cancelled():
        raise _ClientLeft
    return task.result()


async def _disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def read_body(request: Request) -> bytes:
    """The request body, refused (413) past :data:`MAX_BODY_BYTES` without reading the rest."""
    body = bytearray()
    async for piece in request.stream():
        body += piece
        if len(body) > MAX_BODY_BYTES:
            raise APIError(413, f"The request body is over {MAX_BODY_BYTES // 2**20} MiB.")
    return bytes(body)
