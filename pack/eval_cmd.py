"""``lmplanes eval ppl|perf|harness|tasks``: the eval plane's commands, with the model named as in every text
command (``--checkpoint DIR`` or ``--gguf FILE``, ``--device``, ``--dtype``, ``--quantize``)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from pack.errors import UsageError
from pack.model_source import add_model_arguments, load_language_model


def register(commands: Any) -> None:
    """Add ``eval`` to the ``lmplanes`` subparsers."""
    from eval.cli import add_commands

    parser = commands.add_parser(
        "eval",
        help="evaluate a model: perplexity, lm-evaluation-harness, performance",
        description="Evaluate a model: 'ppl' (sliding-window perplexity, WikiText-2 test by default), 'perf' "
        "(latency, throughput, memory, MFU, bandwidth bound), 'harness' (lm-evaluation-harness with the lmplanes "
        "model: 'lmplanes eval harness run --model lmplanes --model_args checkpoint=DIR --tasks ...'), 'tasks' "
        "(write the shipped harness tasks).",
    )
    sub = parser.add_subparsers(dest="eval_command", metavar="COMMAND", required=True)
    add_commands(sub, add_model_arguments, load_language_model)
    for command in sub.choices.values():
        command.set_defaults(run=_usage_errors(command.get_default("run"), command.prog))


def _usage_errors(run: Callable[[argparse.Namespace], int], prog: str) -> Callable[[argparse.Namespace], int]:
    """``run`` with a plain ValueError (the settings' own mistakes: a stride over the context, ...) reported as a
    usage error of ``prog``."""

    def wrapped(args: argparse.Namespace) -> int:
        try:
            return run(args)
        except ValueError as exc:
            if type(exc) is ValueError:
                raise UsageError(str(exc), prog) from None
            raise

    return wrapped
