"""``lmplanes config new|validate|show``: write configs from presets, check config files, print a config.

Everything here goes through :mod:`specs`: loading migrates old versions, validation names the field path
and the reason, ``--set dotted.key=value`` re-validates the whole config, and writes are atomic. ``show``
adds the model's sizes (:func:`specs.model_sizes`): as YAML comments under a YAML config, so the output still
loads as the config; with ``--sizes``, alone, as YAML or JSON data. JSON output is the config alone, since JSON
has no comments and the file must load back.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

import specs
from pack.errors import EXIT_FAILED, CommandError, UsageError, problem_lines, report
from pack.sizes_view import sizes_comment

FORMATS = ("yaml", "json")
_SUFFIX_FORMAT = {".yaml": "yaml", ".yml": "yaml", ".json": "json"}
_NEW = "lmplanes config new"  # whose --help a usage error points to


def register(commands: Any) -> None:
    """Add ``config`` and its subcommands to the ``lmplanes`` subparsers."""
    config = commands.add_parser(
        "config",
        help="write, validate and show configs",
        description="Write a config from a preset, check config files, or print a config. Configs written with "
        "an older schema version are migrated when read; every problem is reported with its field path.",
    )
    actions = config.add_subparsers(dest="action", metavar="ACTION", required=True)

    new = actions.add_parser(
        "new",
        help="write a config file from a preset",
        description="Write a preset, with any --set overrides applied, to a config file.",
    )
    new.add_argument("name", nargs="?", metavar="NAME", help=f"preset name; one of: {', '.join(specs.preset_names())}")
    new.add_argument("--preset", metavar="NAME", help="the preset, as an option instead of NAME")
    new.add_argument("-o", "--output", metavar="PATH", help="file to write (default: NAME.FORMAT here; '-': stdout)")
    new.add_argument("--format", choices=FORMATS, help="file format (default: from the -o suffix, else yaml)")
    _add_set(new)
    new.add_argument("--force", action="store_true", help="overwrite PATH if it exists")
    new.set_defaults(run=run_new)

    validate = actions.add_parser(
        "validate",
        help="check config files (migrating old versions); exit 1 if any fails",
        description="Check each config file: print 'ok: PATH (KIND vN)', or one error line per problem. Exits 1 "
        "if any file fails.",
    )
    validate.add_argument("paths", nargs="+", metavar="PATH", help="a .yaml/.yml/.json config file")
    validate.set_defaults(run=run_validate)

    show = actions.add_parser(
        "show",
        help="print a preset or config file, migrated and validated, with the model's sizes",
        description="Print a preset or config file as the current schema version, with --set overrides applied. "
        "YAML output ends with the model's parameter count and memory (weights, gradients, AdamW states, KV cache "
        "per token) as comments, so it still loads as a config; --sizes prints only those figures, as data.",
    )
    show.add_argument("target", metavar="NAME_OR_PATH", help="a preset name or a config file")
    _add_set(show)
    show.add_argument("--format", choices=FORMATS, default="yaml", help="output format (default: yaml)")
    show.add_argument(
        "--sizes",
        action="store_true",
        help="print the parameter count (by part) and memory figures in bytes instead of the config",
    )
    show.set_defaults(run=run_show)


def _add_set(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a field by its dotted path, e.g. attention.n_heads=8 (repeatable; values are YAML)",
    )


def run_new(args: argparse.Namespace) -> int:
    """Write the preset (with overrides) to a file, atomically; refuse to overwrite without ``--force``."""
    if (args.name is None) == (args.preset is None):
        raise UsageError("give the preset either as NAME or as --preset NAME (exactly one)", _NEW)
    name = args.name or args.preset
    fmt, output = _new_target(name, args.output, args.format)
    cfg = specs.apply_overrides(specs.load_preset(name), args.overrides)
    if output is None:
        sys.stdout.write(specs.dumps_config(cfg, fmt))
        return 0
    if output.exists() and not args.force:
        raise CommandError(f"{output} already exists; pass --force to overwrite it")
    specs.dump_config(cfg, output)
    print(f"wrote {output} ({_kind(cfg)}, from preset {name})")
    return 0


def _new_target(name: str, output: str | None, fmt: str | None) -> tuple[str, Path | None]:
    """The format and the file ``config new`` writes (``None``: stdout)."""
    if output == "-":
        return fmt or "yaml", None
    if output is None:
        fmt = fmt or "yaml"
        return fmt, Path(f"{name}.{fmt}")
    path = Path(output)
    suffix_fmt = _SUFFIX_FORMAT.get(path.suffix)
    if suffix_fmt is None:
        raise UsageError(f"cannot tell the format of {output}: use a .yaml, .yml or .json suffix", _NEW)
    if fmt is not None and fmt != suffix_fmt:
        raise UsageError(f"--format {fmt} contradicts the suffix of {output}", _NEW)
    return suffix_fmt, path


def run_validate(args: argparse.Namespace) -> int:
    """Validate every file; print ``ok: PATH (KIND vN)`` or one error line per problem, and keep going."""
    failed = False
    for path in args.paths:
        try:
            if not Path(path).is_file():
                raise specs.ConfigError([("", "not a file" if Path(path).exists() else "no such file")])
            cfg = specs.load_config(path)
        except specs.ConfigError as exc:
            failed = True
            for line in problem_lines(exc, source=path):
                report(line)
            continue
        written = _written_version(Path(path))
        migrated = f", migrated from v{written}" if written is not None and written != cfg.VERSION else ""
        print(f"ok: {path} ({_kind(cfg)}{migrated})")
    return EXIT_FAILED if failed else 0


def run_show(args: argparse.Namespace) -> int:
    """Print a preset or config file after migration, overrides and validation, and the sizes of its model
    (a model config's own, a training config's model's)."""
    cfg = specs.apply_overrides(specs.load_config(args.target), args.overrides)
    model_cfg = cfg if isinstance(cfg, specs.ModelConfig) else getattr(cfg, "model", None)
    sizes = specs.model_sizes(model_cfg) if isinstance(model_cfg, specs.ModelConfig) else None
    if args.sizes:
        if sizes is None:
            raise CommandError(f"{args.target} is a {cfg.KIND} config, which describes no model to size")
        data = sizes.to_dict()
        sys.stdout.write(json.dumps(data, indent=2) + "\n" if args.format == "json" else yaml.safe_dump(data, sort_keys=False))
        return 0
    sys.stdout.write(specs.dumps_config(cfg, args.format))
    if sizes is not None and args.format == "yaml":
        sys.stdout.write(sizes_comment(sizes))
    return 0


def _kind(cfg: Any) -> str:
    return f"{cfg.KIND} v{cfg.VERSION}"


def _written_version(path: Path) -> int | None:
    """The ``version`` a valid config file was written with (YAML reads JSON too)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    version = data.get("version") if isinstance(data, dict) else None
    return version if isinstance(version, int) else None
