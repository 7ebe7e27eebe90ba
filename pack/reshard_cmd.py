"""``lmplanes checkpoint consolidate|shard``: between a run's sharded (DCP) checkpoints and single-file ones."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pack.errors import CommandError


def add_actions(actions: Any) -> None:
    """Add ``consolidate`` and ``shard`` to the ``lmplanes checkpoint`` actions."""
    consolidate = actions.add_parser(
        "consolidate",
        help="turn a sharded (ddp/fsdp2) checkpoint into a single-file one",
        description="Read a sharded checkpoint written by a ddp or fsdp2 run (DIR/dcp/) on one process and write "
        "a single-file checkpoint (model.safetensors, and train_state/ with the optimizer when DIR has one), "
        "which 'lmplanes generate --checkpoint' and the other commands read.",
    )
    consolidate.add_argument("path", metavar="DIR", help="a sharded checkpoint directory")
    consolidate.add_argument("--out", metavar="DIR", required=True, help="the checkpoint directory to write")
    consolidate.add_argument("--overwrite", action="store_true", help="replace --out if it is a checkpoint")
    consolidate.set_defaults(run=run_consolidate)
    shard = actions.add_parser(
        "shard",
        help="turn a single-file checkpoint into a sharded one",
        description="Write a single-file checkpoint as a sharded (DCP) one, optimizer state included, which a "
        "ddp or fsdp2 run on any number of processes resumes from. The optimizer's layout comes from the run's "
        "config: --config, or train_config.yaml of the run directory the checkpoint sits in.",
    )
    shard.add_argument("path", metavar="DIR", help="a single-file checkpoint directory")
    shard.add_argument("--out", metavar="DIR", required=True, help="the directory to write (must not exist)")
    shard.add_argument("--config", metavar="FILE", help="the training config the checkpoint was written under")
    shard.set_defaults(run=run_shard)


def run_consolidate(args: argparse.Namespace) -> int:
    import model
    from train.sharded import to_single_file

    out = to_single_file(args.path, args.out, model.STORE, overwrite=args.overwrite)
    print(f"wrote {out}")
    return 0


def run_shard(args: argparse.Namespace) -> int:
    import model
    import specs
    from train.sharded import to_sharded

    config = Path(args.config) if args.config else Path(args.path).resolve().parents[1] / "train_config.yaml"
    if not config.is_file():
        raise CommandError(f"{args.path} is not inside a run directory: name its training config with --config")
    cfg = specs.load_config(config, kind="train")
    out = to_sharded(args.path, args.out, model.STORE, cfg)
    print(f"wrote {out}")
    return 0
