"""``lmplanes data build|verify``: the data plane's commands (defined in :mod:`data.cli`), under ``lmplanes``.

The commands and their flags come from ``data.cli.add_commands``, so ``lmplanes data`` and ``python -m data``
never drift apart; this module only turns the data plane's errors into the CLI's one-line reports.
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable
from typing import Any

from data import DataError
from data.cli import add_commands
from pack.errors import CommandError


def register(commands: Any) -> None:
    """Add ``data`` and its subcommands to the ``lmplanes`` subparsers."""
    parser = commands.add_parser(
        "data",
        help="build and check token-shard datasets",
        description="Build text corpora into token shards for training, and check a build against its manifest.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    for sub in add_commands(actions):
        sub.set_defaults(run=_reporting(sub.get_default("run")))


def _reporting(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """``run`` with a data-plane error raised as a :class:`~pack.errors.CommandError` (one line, exit 1)."""

    @functools.wraps(run)
    def wrapped(args: argparse.Namespace) -> int:
        try:
            return run(args)
        except DataError as exc:
            raise CommandError(str(exc)) from exc

    return wrapped
