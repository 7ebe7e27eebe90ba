"""Chat messages to prompt text, through the model's own Jinja chat template.

A Hugging Face checkpoint keeps its template in ``chat_template.jinja`` or as ``chat_template`` in
``tokenizer_config.json`` (a string, or a list of named templates of which ``default`` is used); the file wins
when both exist, as in transformers. It is rendered the way transformers renders it: in jinja2's sandbox
(templates come with downloaded models), with ``trim_blocks`` and ``lstrip_blocks``, and the variables
``messages``, ``add_generation_prompt``, ``bos_token``, ``eos_token`` plus the helpers ``raise_exception`` and
``strftime_now``.

A checkpoint without a template (``lmplanes train`` writes none) gets :data:`DEFAULT_TEMPLATE`: each message as
a ``Role: text`` paragraph, then ``Assistant:``. It is plain text, so any tokenizer that can write letters
encodes it, a character-level one included.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from data.tokenizer import ROLES_FILE

TEMPLATE_FILE = "chat_template.jinja"
DEFAULT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] | capitalize }}: {{ message['content'] }}\n\n{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)


class ChatTemplateError(ValueError):
    """The template cannot be read, or refuses the messages (its ``raise_exception``, a missing field ...)."""


class ChatTemplate:
    """``render(messages) -> prompt text``. ``source`` is the Jinja text (None: :data:`DEFAULT_TEMPLATE`);
    ``bos_token`` / ``eos_token`` are the spellings templates insert."""

    def __init__(self, source: str | None = None, *, bos_token: str | None = None, eos_token: str | None = None) -> None:
        self.source = DEFAULT_TEMPLATE if source is None else source
        self.is_default = source is None
        self.tokens = {"bos_token": bos_token or "", "eos_token": eos_token or ""}
        environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
        environment.filters["tojson"] = _tojson
        environment.globals.update(raise_exception=_raise_exception, strftime_now=_strftime_now)
        try:
            self.template = environment.from_string(self.source)
        except jinja2.TemplateSyntaxError as exc:
            raise ChatTemplateError(f"the chat template is not valid Jinja (line {exc.lineno}: {exc.message})") from None

    @classmethod
    def from_directory(
        cls, folder: str | os.PathLike[str], *, bos_token: str | None = None, eos_token: str | None = None
    ) -> ChatTemplate:
        """The template a model directory carries (see the module notes), or the default one."""
        return cls(read_template(Path(folder)), bos_token=bos_token, eos_token=eos_token)

    def render(self, messages: Sequence[Mapping[str, Any]], *, add_generation_prompt: bool = True) -> str:
        try:
            return self.template.render(
                messages=[dict(m) for m in messages], add_generation_prompt=add_generation_prompt, **self.tokens
            )
        except Exception as exc:  # a template is code from the model's authors: any failure is its refusal
            raise ChatTemplateError(f"the chat template rejected the messages: {exc}") from None


def read_template(folder: Path) -> str | None:
    """The Jinja text in ``folder`` (``chat_template.jinja``, else ``tokenizer_config.json``), or None."""
    file = folder / TEMPLATE_FILE
    if file.is_file():
        return file.read_text(encoding="utf-8")
    config_file = folder / ROLES_FILE
    if not config_file.is_file():
        return None
    try:
        template = json.loads(config_file.read_text(encoding="utf-8")).get("chat_template")
    except (ValueError, UnicodeDecodeError, AttributeError) as exc:
        raise ChatTemplateError(f"{config_file}: not a JSON object ({exc})") from None
    if isinstance(template, list):  # named templates: [{"name": ..., "template": ...}]
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        if "default" not in named:
            raise ChatTemplateError(f"{config_file}: chat_template names no 'default' template (has {sorted(map(str, named))})")
        template = named["default"]
    if template is not None and not isinstance(template, str):
        raise ChatTemplateError(f"{config_file}: chat_template is not a string or a list with a 'default' template")
    return template


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None,
            sort_keys: bool = False) -> str:
    # jinja2's own tojson escapes HTML characters, which would change the prompt; transformers defines this one.
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _raise_exception(message: str) -> NoReturn:
    raise jinja2.TemplateError(message)


def _strftime_now(format: str) -> str:
    return datetime.now().strftime(format)
