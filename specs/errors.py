"""Errors raised by contracts. Each message names the field or tensor at fault and the reason."""

from __future__ import annotations

import os
from collections.abc import Iterable


class ConfigError(ValueError):
    """A config failed to load, migrate or validate.

    ``problems`` holds one ``(field_path, reason)`` pair per problem; ``str(err)`` shows one line each.
    """

    def __init__(self, problems: list[tuple[str, str]], source: str | None = None) -> None:
        self.problems = problems
        self.source = source
        head = f"invalid config{f' in {source}' if source else ''}"
        lines = [f"{path}: {reason}" if path else reason for path, reason in problems]
        super().__init__(head + ":\n  " + "\n  ".join(lines) if len(lines) > 1 else f"{head}: {lines[0]}")


class ShapeError(ValueError):
    """A tensor handed across a plane boundary has the wrong shape, dtype or layout."""


class InputError(ValueError):
    """A value handed to a model is outside what it accepts: token ids beyond the vocabulary, an empty input,
    positions beyond the context length, a cache built for another model. The message names the input, the
    bound and what to change."""


class CheckpointError(ValueError):
    """A checkpoint directory (ours, or a Hugging Face model directory being imported) is incomplete, corrupted,
    not what it claims to be, or does not match the model its config describes.

    ``problems`` holds one line per problem, each naming the file (or tensor) at fault.
    """

    def __init__(self, problems: Iterable[str] | str, source: str | os.PathLike[str] | None = None) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        self.source = None if source is None else str(source)
        head = f"invalid checkpoint{f' {self.source}' if self.source else ''}"
        if len(self.problems) == 1:
            super().__init__(f"{head}: {self.problems[0]}")
        else:
            super().__init__(f"{head} ({len(self.problems)} problems):\n  " + "\n  ".join(self.problems))
