"""``lmplanes checkpoint verify|show|consolidate|shard``: check a checkpoint directory, describe it, or convert
between sharded and single-file checkpoints."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from pack.errors import EXIT_FAILED, CommandError, report
from pack.reshard_cmd import add_actions


def register(commands: Any) -> None:
    """Add ``checkpoint`` and its subcommands to the ``lmplanes`` subparsers."""
    checkpoint = commands.add_parser(
        "checkpoint",
        help="verify, describe or convert (sharded <-> single-file) checkpoint directories",
        description="Verify a checkpoint directory against its manifest and config, or describe what it holds.",
    )
    actions = checkpoint.add_subparsers(dest="action", metavar="ACTION", required=True)
    verify = actions.add_parser(
        "verify",
        help="check every file against MANIFEST.json and every tensor against the config; exit 1 on any problem",
        description="Check each checkpoint: every file's size and sha256 against MANIFEST.json, the config, and "
        "every tensor's name and shape against the model the config describes (tensor data is not read). "
        "Leftovers of interrupted saves to the same path are removed first. Prints 'ok: DIR ...' or one error "
        "line per problem; exits 1 if any checkpoint has a problem.",
    )
    verify.add_argument("paths", nargs="+", metavar="DIR", help="a checkpoint directory")
    verify.set_defaults(run=run_verify)
    show = actions.add_parser(
        "show",
        help="print what a checkpoint holds: model, size, parameters, card",
        description="Print a checkpoint's model configuration summary, parameter count, dtype, size on disk and "
        "model card. Nothing is verified (use 'lmplanes checkpoint verify').",
    )
    show.add_argument("path", metavar="DIR", help="a checkpoint directory")
    show.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    show.set_defaults(run=run_show)
    add_actions(actions)


def run_verify(args: argparse.Namespace) -> int:
    import model

    failed = False
    for path in args.paths:
        for removed in model.clean_stale_temporaries(path):
            print(f"removed {removed}: left by an interrupted save to {path}")
        problems = model.verify_checkpoint(path)
        if problems:
            failed = True
            for problem in problems:
                report(f"{path}: {problem}")
            continue
        files = json.loads((Path(path) / "MANIFEST.json").read_text(encoding="utf-8"))
        size = sum(entry["size"] for entry in files["files"])
        print(f"ok: {path} ({len(files['files'])} files, {_megabytes(size)}, {files['content_id']})")
    return EXIT_FAILED if failed else 0


def run_show(args: argparse.Namespace) -> int:
    facts = describe(Path(args.path))
    if args.json:
        print(json.dumps(facts, indent=2))
        return 0
    width = max(len(key) for key in facts) + 2
    for key, value in facts.items():
        print(f"{key + ':':<{width}}{value}")
    return 0


def describe(root: Path) -> dict[str, Any]:
    """The facts ``checkpoint show`` prints, read from config.json, modelcard.json and the file sizes."""
    import model
    import specs

    if not (root / "config.json").is_file():
        raise CommandError(f"{root}: not a checkpoint directory (no config.json)")
    cfg = specs.load_config(root / "config.json", kind="model")
    files = sorted(p for p in root.rglob("*") if p.is_file())
    facts: dict[str, Any] = {
        "path": str(root),
        "name": cfg.name or "(unnamed)",
        "architecture": cfg.architecture,
        "layers": cfg.n_layers,
        "width": cfg.d_model,
        "heads": f"{cfg.attention.n_heads} query, {cfg.attention.kv_heads} key/value, head dim {cfg.head_dim}",
        "positions": cfg.positions + (f" (theta {cfg.rope.theta:g}, scaling {cfg.rope.scaling})" if cfg.rope else ""),
        "vocab_size": cfg.vocab_size,
        "max_seq_len": cfg.max_seq_len,
        "parameters": f"{model.count_parameters(cfg):,}",
        "files": ", ".join(str(p.relative_to(root)) for p in files),
        "size": _megabytes(sum(p.stat().st_size for p in files)),
    }
    card_path = root / "modelcard.json"
    if card_path.is_file():
        card = specs.load_config(card_path, kind="modelcard")
        facts.update({
            "dtype": card.dtype,
            "created_at": card.created_at,
            "model_version": card.model_version,
            "license": card.license,
            "intended_use": card.intended_use,
            "training_data": ", ".join(f"{d.name} ({d.uri})" for d in card.training_data) or "none recorded",
            "metrics": ", ".join(f"{k}={v:g}" for k, v in card.metrics.items()) or "none recorded",
            "parents": ", ".join(card.parents) or "none",
        })
    manifest = root / "MANIFEST.json"
    facts["manifest"] = (
        json.loads(manifest.read_text(encoding="utf-8")).get("content_id", "malformed") if manifest.is_file() else "missing"
    )
    return facts


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 100_000 else f"{size / 1e3:.1f} kB"
