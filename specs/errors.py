"""Errors raised by contracts. Each message names the field or tensor at fault and the reason."""

from __future__ import annotations


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
