"""``lmplanes train``: start a run from a config, or resume one from its directory.

    lmplanes train CONFIG --out DIR [--set key=value ...]
    lmplanes train --resume DIR [--set max_steps=N ...]
    lmplanes train ... --nproc N          N processes on this machine (torchrun); parallel.strategy ddp or fsdp2

Under ``--nproc N`` the command starts ``python -m torch.distributed.run --standalone --nproc-per-node N`` over
the same command without ``--nproc``, and exits with its status (non-zero when any rank fails). On several
machines, start torchrun yourself on each (see docs/scaling.md):

    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29400 -m train CONFIG --out DIR

CONFIG is a training preset name or a YAML/JSON file. The model store (how models are built and saved) is
handed in by the caller: ``pack`` passes the model plane's, ``python -m train`` looks up the one installed
under the ``lmplanes.model_stores`` entry point, so this module never imports model code.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

import specs
from specs.protocols import ModelStore
from specs.train_config import TrainConfig

if TYPE_CHECKING:
    from train.trainer import RunResult



def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", nargs="?", metavar="CONFIG", help="a training preset name or config file")
    parser.add_argument("--out", metavar="DIR", help="the run directory to create (it must be new or empty)")
    parser.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its latest checkpoint")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field by its dotted path, e.g. max_steps=500 or model.n_layers=6 (repeatable; "
        "a leading 'train.' is accepted)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument(
        "--nproc",
        type=int,
        metavar="N",
        help="run N processes on this machine under torchrun (one per GPU; gloo on the CPU); the config's "
        "parallel.strategy must be ddp or fsdp2",
    )


def run(args: argparse.Namespace, store: ModelStore, *, module: str = "train") -> int:
    """Exit status 0 when the run finished or was stopped cleanly by a signal (after a checkpoint), 1 when it
    diverged. Configuration mistakes raise (the caller prints them as one line). ``module``: what
    ``python -m`` runs this command in each process under ``--nproc`` (``pack`` for ``lmplanes train``)."""
    if args.nproc is not None:
        return launch(args, module)
    from train.trainer import Trainer  # torch is imported only when a run starts, not to build the parser

    overrides = [o.removeprefix("train.") for o in args.overrides]
    if args.resume:
        if args.config or args.out:
            raise ValueError("--resume DIR continues a run: give no CONFIG or --out with it")
        saved = _run_config(args.resume)
        cfg = specs.apply_overrides(saved, overrides) if overrides else None
        result = _report(lambda: Trainer.resume(args.resume, store, overrides=cfg, progress=not args.quiet))
    else:
        if not args.config or not args.out:
            raise ValueError("give a CONFIG and --out DIR (or --resume DIR)")
        cfg = specs.apply_overrides(specs.load_config(args.config, kind="train"), overrides)
        assert isinstance(cfg, TrainConfig)
        result = _report(lambda: Trainer(cfg, args.out, store, progress=not args.quiet).fit())
    return result


def launch(args: argparse.Namespace, module: str) -> int:
    """Run this command in ``args.nproc`` processes under torchrun; its exit status."""
    if args.nproc < 1:
        raise ValueError(f"--nproc must be at least 1, got {args.nproc}")
    if "RANK" in os.environ or "WORLD_SIZE" in os.environ:
        raise ValueError("--nproc starts the processes itself: leave it out when running under torchrun")
    overrides = [o.removeprefix("train.") for o in args.overrides]
    if args.config or args.resume:  # a config mistake is reported once, here, rather than by every rank
        cfg = _run_config(args.resume) if args.resume else specs.load_config(args.config, kind="train")
        if specs.apply_overrides(cfg, overrides).parallel.strategy == "single" and args.nproc > 1:
            raise ValueError(f"--nproc {args.nproc} needs parallel.strategy ddp or fsdp2 (add --set "
                             f"parallel.strategy=fsdp2)")
    worker = [*(["train"] if module == "pack" else []), *([args.config] if args.config else [])]
    for flag, value in (("--out", args.out), ("--resume", args.resume)):
        worker += [flag, value] if value else []
    for override in args.overrides:
        worker += ["--set", override]
    worker += ["--quiet"] if args.quiet else []
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={args.nproc}",
               "-m", module, *worker]
    return subprocess.run(command, check=False).returncode


def _run_config(run_dir: str) -> TrainConfig:
    from train.run_dir import RunDir

    return RunDir(run_dir).config()


def _report(fit: Callable[[], RunResult]) -> int:
    from train.trainer import TrainingDiverged

    try:
        result = fit()
    except TrainingDiverged as exc:
        print(f"lmplanes: error: {exc}", file=sys.stderr)
        return 1
    val = f", val loss {result.final_val_loss:.4f}" if result.final_val_loss is not None else ""
    how = f"stopped by {result.stopped_by} after" if result.stopped_by else "finished"
    if os.environ.get("RANK", "0") != "0":
        return 0  # rank 0 reports for the run
    print(f"{how} step {result.steps}: train loss {result.final_train_loss:.4f}{val}; checkpoint {result.latest}")
    return 0


