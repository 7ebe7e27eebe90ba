"""The data plane's commands, ``build`` and ``verify``: ``python -m data ...`` and ``lmplanes data ...``.

:func:`add_commands` defines the commands on any argparse subparsers, so ``lmplanes`` (in ``pack``) and
``python -m data`` offer the same flags. The ``run_*`` functions raise :class:`~data.errors.DataError` for a
user mistake; :func:`main` prints it as one line and exits 1, and ``pack`` does the same through its own
error reporting.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from typing import Any

from data.build import DEFAULT_SHARD_SIZE_TOKENS, TOKENIZER_CHOICES, build_corpus
from data.errors import DataError
from data.manifest import verify_build, written_files
from data.splits import SPLIT_METHODS

PROG = "python -m data"
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}


def add_commands(actions: Any) -> list[argparse.ArgumentParser]:
    """Add ``build`` and ``verify`` to argparse subparsers; return their parsers."""
    build = actions.add_parser(
        "build",
        help="build a text corpus into token shards",
        description="Read text files (or every file in a folder), optionally drop duplicate documents and redact "
        "personal data, tokenise, split into train and val, and write token shards with a manifest.json that "
        "records sources, checksums and statistics. The output appears only when complete.",
    )
    build.add_argument("--input", nargs="+", required=True, metavar="PATH", help="text files or folders (UTF-8)")
    build.add_argument("--outdir", required=True, metavar="DIR", help="folder to write; must be empty or absent")
    build.add_argument("--tokenizer", required=True, metavar="SPEC", help=f"one of: {TOKENIZER_CHOICES}")
    build.add_argument("--shard-size-tokens", type=int, default=DEFAULT_SHARD_SIZE_TOKENS, metavar="N",
                       help=f"tokens per shard file (default: {DEFAULT_SHARD_SIZE_TOKENS:,})")
    build.add_argument("--dedup", action="store_true",
                       help="drop exact duplicates and near duplicates (word 5-gram Jaccard similarity 0.8 or more)")
    build.add_argument("--redact-pii", action="store_true",
                       help="replace e-mail addresses, card numbers, IP addresses and phone numbers by placeholders")
    build.add_argument("--val-fraction", type=float, default=0.1, metavar="F",
                       help="share of the corpus held out for validation (default: 0.1)")
    build.add_argument("--split-by", choices=SPLIT_METHODS, default="auto",
                       help="position: cut the token stream once; document: hold out whole documents, chosen with "
                       "--seed; auto (default): position for a single document, else document")
    build.add_argument("--seed", type=int, default=0, help="seed for choosing validation documents (default: 0)")
    build.add_argument("--doc-sep", metavar="TEXT",
                       help="split each file into documents at TEXT, e.g. '\\n\\n' for blank lines (\\n, \\t, \\r and "
                       "\\\\ are understood); default: one document per file")
    build.add_argument("--license", action="append", default=[], metavar="TEXT",
                       help="licence of the sources, recorded in the manifest (repeatable)")
    build.add_argument("--dtype", choices=("auto", "uint16", "uint32"), default="auto",
                       help="token storage; auto (default): uint16 if the vocabulary fits, else uint32")
    build.add_argument("--overwrite", action="store_true",
                       help="replace a previous build in DIR; files it did not write are never deleted")
    build.set_defaults(run=run_build)

    verify = actions.add_parser(
        "verify",
        help="check every file of a build against its manifest",
        description="Check the size and sha256 of every file a build wrote against its manifest.json. Exits 1 "
        "and names each file that is missing or differs.",
    )
    verify.add_argument("directory", metavar="DIR", help="a folder written by 'build'")
    verify.set_defaults(run=run_verify)
    return [build, verify]


def unescape(text: str) -> str:
    r"""``\n``, ``\t``, ``\r`` and ``\\`` in a command-line argument as the characters they stand for."""
    return re.sub(r"\\([ntr\\])", lambda m: _ESCAPES[m.group(1)], text)


def run_build(args: argparse.Namespace) -> int:
    manifest = build_corpus(
        args.input,
        args.outdir,
        tokenizer=args.tokenizer,
        shard_size_tokens=args.shard_size_tokens,
        dedup=args.dedup,
        redact_pii=args.redact_pii,
        val_fraction=args.val_fraction,
        split_by=args.split_by,
        seed=args.seed,
        doc_sep=None if args.doc_sep is None else unescape(args.doc_sep),
        licenses=args.license,
        dtype=args.dtype,
        overwrite=args.overwrite,
        progress=True,
    )
    for line in summary(args.outdir, manifest):
        print(line)
    return 0


def summary(outdir: str, manifest: dict[str, Any]) -> list[str]:
    """What a build wrote, in a few lines."""
    splits = ", ".join(
        f"{name} {entry['tokens']:,} tokens in {len(entry['shards'])} shard(s)" for name, entry in manifest["splits"].items()
    )
    tok = manifest["tokenizer"]
    docs = manifest["documents"]
    lines = [
        f"wrote {outdir}: {splits}; {manifest['dtype']}; {tok['kind']} tokenizer with {tok['vocab_size']:,} ids",
        f"documents: {docs['read']:,} read, {docs['kept']:,} kept; split by {manifest['split']['method']}",
    ]
    if manifest["dedup"] is not None:
        lines.append(f"duplicates removed: {manifest['dedup']['exact_removed']:,} exact, "
                     f"{manifest['dedup']['near_removed']:,} near")
    if manifest["pii_redacted"] is not None:
        lines.append("redacted: " + ", ".join(f"{kind} {n:,}" for kind, n in manifest["pii_redacted"].items()))
    return lines


def run_verify(args: argparse.Namespace) -> int:
    manifest = verify_build(args.directory)
    print(f"ok: {args.directory} ({len(written_files(manifest))} files match the manifest)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m data``: run one command; a user mistake is one ``error:`` line and exit status 1."""
    parser = argparse.ArgumentParser(prog=PROG, description="Build and check token-shard datasets.")
    add_commands(parser.add_subparsers(dest="action", metavar="ACTION", required=True))
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (DataError, OSError) as exc:
        print(f"{PROG}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
