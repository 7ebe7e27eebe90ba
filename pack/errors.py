"""User mistakes the CLI reports as one line each, and how they are printed.

A user mistake never shows a traceback: it becomes ``lmplanes: error: ...`` on stderr and an exit status,
2 for a malformed command line (argparse's convention), 1 for a command that could not do its work (an
invalid config, a file that would be overwritten). Anything else that escapes is a bug and keeps its
traceback.
"""

from __future__ import annotations

import sys

from specs import ConfigError

PROG = "lmplanes"
EXIT_FAILED = 1
EXIT_USAGE = 2


class UsageError(Exception):
    """The command line itself is wrong (exit 2); ``help_prog`` names the parser whose ``--help`` helps."""

    def __init__(self, message: str, help_prog: str = PROG) -> None:
        super().__init__(message)
        self.help_prog = help_prog


class CommandError(Exception):
    """A well-formed command that cannot do its work because of the user's input (exit 1)."""


def report(message: str) -> None:
    """Print one ``lmplanes: error: ...`` line to stderr."""
    print(f"{PROG}: error: {one_line(message)}", file=sys.stderr)


def problem_lines(err: ConfigError, source: str | None = None) -> list[str]:
    """One line per problem in ``err``: ``[SOURCE: ][FIELD: ]REASON``, with multi-line reasons folded."""
    where = source or err.source
    lines = []
    for field, reason in err.problems:
        parts = [p for p in (where, field) if p]
        lines.append(": ".join([*parts, one_line(reason)]))
    return lines


def one_line(text: str) -> str:
    """Fold ``text`` onto one line (parser messages such as YAML's span several)."""
    return " ".join(str(text).split())
