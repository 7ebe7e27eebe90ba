"""``lmplanes train``: the train plane's command, with the model plane as its model store."""

from __future__ import annotations

import argparse
from typing import Any

from pack.errors import CommandError, UsageError


def register(commands: Any) -> None:
    """Add ``train`` to the ``lmplanes`` subparsers."""
    from train.cli import add_arguments

    parser = commands.add_parser(
        "train",
        help="train a model from a config, or resume a run",
        description="Train a language model: 'lmplanes train CONFIG --out DIR' starts a run (CONFIG is a "
        "training preset, such as gpt-shakespeare-char, or a YAML file; the bundled tinyshakespeare corpus is "
        "the default data), and 'lmplanes train --resume DIR' continues one from its latest checkpoint. The run "
        "directory receives metrics.jsonl, metrics.csv, loss.png and checkpoints/. Ctrl-C checkpoints and stops.",
    )
    add_arguments(parser)
    parser.set_defaults(run=run_train)


def run_train(args: argparse.Namespace) -> int:
    from train.cli import launch, run
    from train.distributed import DistributedSetupError

    try:
        if args.nproc is not None:  # the workers build the model; this process only waits for them
            return launch(args, "pack")
        import model

        return run(args, model.STORE, module="pack")
    except DistributedSetupError as exc:  # a half-configured torchrun environment, or a config it cannot run
        raise CommandError(str(exc)) from None
    except ValueError as exc:
        if type(exc) is ValueError:  # the command line's own mistakes; config/checkpoint errors print themselves
            raise UsageError(str(exc), "lmplanes train") from None
        raise
