"""The request bodies of ``/v1/completions`` and ``/v1/chat/completions``, validated strictly.

Types are checked as OpenAI documents them (``"5"`` is not a number, ``1`` is not a boolean) and unknown fields
are refused with OpenAI's own wording ("Unrecognized request argument supplied"), so a misspelt option never
silently does nothing. OpenAI options this server does not implement (log probabilities, logit bias, tools,
JSON mode, echo, best_of, suffix) are accepted only at the value that asks for nothing and refused otherwise;
``user`` (an end-user id for abuse monitoring) is accepted and ignored. Beyond OpenAI's fields, ``top_k``,
``min_p`` and ``repetition_penalty`` are accepted as vLLM accepts them.
"""

from __future__ import annotations

import json
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from serve.api_errors import APIError

MAX_N = 16  # answers per prompt
MAX_BODY_BYTES = 8 * 2**20

# OpenAI options left out, each with the values that ask for nothing.
UNSUPPORTED: dict[str, tuple[Any, ...]] = {
    "logprobs": (None, False, 0),
    "top_logprobs": (None, 0),
    "logit_bias": (None, {}),
    "echo": (None, False),
    "best_of": (None, 1),
    "suffix": (None, ""),
    "tools": (None, []),
    "tool_choice": (None, "none"),
    "parallel_tool_calls": (None, True, False),
    "response_format": (None, {"type": "text"}),
}
# What a field of several accepted shapes must be, said once instead of one complaint per shape.
SHAPES = {
    "prompt": "a string, a list of strings, a list of token ids or a list of lists of token ids",
    "stop": "a string or a list of strings",
    "content": "a string or a list of text parts",
}


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class StreamOptions(_Body):
    include_usage: bool = False


class _Generation(_Body):
    """The fields both endpoints share (None everywhere means: OpenAI's default)."""

    model: str
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    n: int | None = Field(default=None, ge=1, le=MAX_N)
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=0, le=2**64 - MAX_N)  # answer k is seeded seed + k (torch: uint64)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    user: str | None = None
    top_k: int | None = Field(default=None, ge=1)
    min_p: float | None = Field(default=None, ge=0, le=1)
    repetition_penalty: float | None = Field(default=None, gt=0)

    @property
    def stop_strings(self) -> tuple[str, ...]:
        found = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        if any(not s for s in found):
            raise APIError(400, "stop strings must not be empty", param="stop")
        return found


class CompletionRequest(_Generation):
    prompt: str | list[str] | list[int] | list[list[int]]


class TextPart(_Body):
    type: Literal["text"]
    text: str


class Message(_Body):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart]
    name: str | None = None
    tool_call_id: str | None = None

    def for_template(self) -> dict[str, str]:
        """The message as chat templates read it: content as one string; OpenAI's ``developer`` role (its new name
        for instructions) is the ``system`` role templates know."""
        text = self.content if isinstance(self.content, str) else "".join(part.text for part in self.content)
        found = {"role": "system" if self.role == "developer" else self.role, "content": text}
        if self.name is not None:
            found["name"] = self.name
        return found


class ChatRequest(_Generation):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)  # OpenAI's newer name for max_tokens

    @property
    def answer_limit(self) -> int | None:
        if self.max_tokens is not None and self.max_completion_tokens not in (None, self.max_tokens):
            raise APIError(400, "max_tokens and max_completion_tokens disagree; send one", param="max_completion_tokens")
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


Parsed = TypeVar("Parsed", bound=_Body)


def parse_body(body: bytes, kind: type[Parsed]) -> Parsed:
    """The validated request, or an :class:`APIError` (400) that names the field at fault."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise APIError(400, f"The request body is not valid JSON ({exc}).") from None
    if not isinstance(data, dict):
        raise APIError(400, f"The request body must be a JSON object, got {type(data).__name__}.")
    for name, harmless in UNSUPPORTED.items():
        if name in data:
            if data[name] not in harmless:
                allowed = ", ".join(json.dumps(value) for value in harmless)
                raise APIError(400, f"{name} is not supported by this server: it may only be one of {allowed}.", param=name)
            del data[name]
    try:
        return kind.model_validate(data)
    except ValidationError as exc:
        raise _field_error(exc) from None


def _field_error(exc: ValidationError) -> APIError:
    error = exc.errors()[0]
    if error["type"] == "extra_forbidden":
        param = _param(error["loc"])
        return APIError(400, f"Unrecognized request argument supplied: {param}", param=param)
    # Errors about one value of a field with several shapes come one per shape, each with its tag in the path
    # ('prompt', 'list[int]', 1); the path up to the first tag names the value.
    loc = error["loc"]
    tagged = next((i for i, part in enumerate(loc) if _is_shape_tag(part)), None)
    if tagged is not None and str(loc[tagged - 1]) in SHAPES:
        param = _param(loc[:tagged])
        return APIError(400, f"Invalid value for '{param}': must be {SHAPES[str(loc[tagged - 1])]}.", param=param)
    param = _param(loc)
    return APIError(400, f"Invalid value for '{param}': {error['msg']}.", param=param)


def _is_shape_tag(part: str | int) -> bool:
    return isinstance(part, str) and (part in ("str", "int") or "[" in part)


def _param(loc: tuple[str | int, ...]) -> str:
    """OpenAI's spelling of a field path: ``messages.[0].content``."""
    return ".".join(f"[{p}]" if isinstance(p, int) else p for p in loc if not _is_shape_tag(p))
