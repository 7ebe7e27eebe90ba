"""``lmplanes``: parse the command line and dispatch to one subcommand module.

Each subcommand module (:mod:`pack.config_cmd`, :mod:`pack.data_cmd`, :mod:`pack.env_cmd`) has ``register(subparsers)``, which adds
its parser and sets ``run`` (a function ``(args) -> exit status``) as a default. This module only builds the
parser, calls ``run`` and turns user mistakes into one ``lmplanes: error: ...`` line.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import NoReturn

from pack import (
    chat_cmd,
    checkpoint_cmd,
    config_cmd,
    convert_cmd,
    data_cmd,
    env_cmd,
    eval_cmd,
    export_cmd,
    generate_cmd,
    huge_pages,
    rag_cmd,
    serve_cmd,
    train_cmd,
)
from pack.errors import EXIT_FAILED, EXIT_USAGE, PROG, CommandError, UsageError, problem_lines, report
from specs import CheckpointError, ConfigError

# Subcommand modules, in the order ``lmplanes --help`` lists them. A subcommand arrives with its plane.
COMMANDS = (
    config_cmd, data_cmd, train_cmd, generate_cmd, chat_cmd, serve_cmd, eval_cmd, rag_cmd, checkpoint_cmd, convert_cmd,
    export_cmd, env_cmd,
)


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are raised (and printed as one line by :func:`main`), not printed here."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message, help_prog=self.prog)


def build_parser() -> argparse.ArgumentParser:
    """The full ``lmplanes`` parser, every subcommand included."""
    parser = _Parser(
        prog=PROG,
        description="lmplanes: a modular transformer language-model stack. Each subcommand delegates to a plane.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {env_cmd.lmplanes_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMANDS:
        module.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``lmplanes`` with ``argv`` (default: ``sys.argv[1:]``) and return the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if getattr(args, "huge_pages", False):  # before the command imports torch
            huge_pages.enable()
        return args.run(args)
    except UsageError as exc:
        report(f"{exc} (see '{exc.help_prog} --help')")
        return EXIT_USAGE
    except CommandError as exc:
        report(str(exc))
        return EXIT_FAILED
    except ConfigError as exc:
        for line in problem_lines(exc):
            report(line)
        return EXIT_FAILED
    except CheckpointError as exc:  # a checkpoint or model directory we were told to read
        for problem in exc.problems:
            report(f"{exc.source}: {problem}" if exc.source else problem)
        return EXIT_FAILED
    except OSError as exc:  # a file we were told to read or write: permissions, a directory in the way, ...
        report(os_error_line(exc))
        return EXIT_FAILED
    except KeyboardInterrupt:
        report("interrupted")
        return 130
    except SystemExit as exc:  # --help and --version exit through argparse
        return exc.code if isinstance(exc.code, int) else 0


def os_error_line(exc: OSError) -> str:
    """``REASON: PATH`` without Python's ``[Errno N]`` prefix; the path only when the reason does not name it."""
    text = exc.strerror or str(exc)
    if exc.filename is not None and str(exc.filename) not in text:
        text = f"{text}: {exc.filename}"
    return text
