"""``python -m governance sbom|sign|keygen|receipt|lineage|card|verify|release``.

Each command works on files only. A user mistake (a missing directory, a wrong key, an unreadable input) is
one ``error:`` line and exit status 1; ``verify`` prints one line per problem and exits 1 when there is any.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from governance import files as f
from governance.card import write_card
from governance.checkpoint import checkpoint_id, read_card
from governance.checksums import write_checksums
from governance.cyclonedx_sbom import write_cyclonedx
from governance.gate import verify_release
from governance.lineage import write_lineage
from governance.receipt import make_receipt, now, run_with_receipt, write_receipt
from governance.release import passphrase_from_env, release
from governance.signing import keygen, load_private_key, sign_file
from governance.spdx_sbom import write_spdx

PROG = "python -m governance"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Release artifacts for checkpoints: SBOMs, signed "
                                     "checksums, receipts, lineage, model cards, and the release gate.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser("sbom", help="CycloneDX 1.6 (or SPDX 2.3) SBOM of the model and this environment")
    _checkpoint_option(p)
    p.add_argument("--out", required=True, metavar="FILE")
    p.add_argument("--format", choices=("cyclonedx", "spdx"), default="cyclonedx")
    p.set_defaults(run=_sbom)

    p = commands.add_parser("sign", help="CHECKSUMS.sha256 of files (sha256sum -c format), Ed25519-signed with --key")
    p.add_argument("--files", nargs="+", required=True, metavar="FILE")
    p.add_argument("--out", required=True, metavar="FILE", help="the checksum file; .sig and the public key beside it")
    p.add_argument("--root", default=".", metavar="DIR", help="paths are written relative to DIR (default: .)")
    p.add_argument("--key", metavar="PEM", help="Ed25519 private key (from keygen); without it nothing is signed")
    _passphrase_option(p)
    p.set_defaults(run=_sign)

    p = commands.add_parser("keygen", help="make a signing key pair (private key mode 0600)")
    p.add_argument("--out", required=True, metavar="PEM", help="private key file; the public key goes to NAME.pub.pem")
    p.add_argument("--algorithm", choices=("ed25519", "ecdsa-p256"), default="ed25519",
                   help="ed25519 (default) signs the checksums; ecdsa-p256 is for --model-signing-key")
    _passphrase_option(p)
    p.set_defaults(run=_keygen)

    p = commands.add_parser("receipt", help="RECEIPT.json: system, Python, packages, git, command, seeds, hashes")
    p.add_argument("--out", required=True, metavar="FILE")
    p.add_argument("--checkpoint", metavar="DIR", help="add its content id, config hash and data hashes")
    p.add_argument("--seed", type=int, action="append", default=[], metavar="N")
    p.add_argument("--config", metavar="FILE", help="record this config file's sha256")
    p.add_argument("--data-manifest", action="append", default=[], metavar="FILE", help="record its sha256")
    p.add_argument("cmd", nargs="*", metavar="-- COMMAND", help="run COMMAND and record it, its times and exit status")
    p.set_defaults(run=_receipt)

    p = commands.add_parser("lineage", help="LINEAGE.dot: data shards -> run -> checkpoint -> exports")
    _checkpoint_option(p)
    p.add_argument("--out", required=True, metavar="FILE")
    p.add_argument("--export", action="append", default=[], metavar="DIR", help="an export made from it")
    p.add_argument("--data", action="append", default=[], metavar="DIR", help="a data build (manifest.json) it read")
    p.add_argument("--png", action="store_true", help="also render FILE.png with graphviz")
    p.set_defaults(run=_lineage)

    p = commands.add_parser("card", help="MODEL_CARD.md + MODEL_CARD.json from modelcard.json, metrics, SBOM, receipt")
    _checkpoint_option(p)
    p.add_argument("--out-dir", required=True, metavar="DIR")
    p.add_argument("--metrics", metavar="FILE", help="JSON object of metric names to numbers")
    p.add_argument("--sbom", metavar="FILE")
    p.add_argument("--receipt", metavar="FILE")
    p.set_defaults(run=_card)

    p = commands.add_parser("verify", help="the release gate: exit 0 only if every artifact holds")
    p.add_argument("directory", metavar="DIR", help="a released directory (with artifacts/)")
    p.add_argument("--key", metavar="PEM", help="the public key to trust (default: the one in the release)")
    p.add_argument("--unsigned", action="store_true", help="accept a release without a signature")
    p.set_defaults(run=_verify)

    p = commands.add_parser("release", help="every artifact into DIR/artifacts/, then verify")
    p.add_argument("directory", metavar="DIR", help="a checkpoint or export directory")
    p.add_argument("--key", metavar="PEM", help="Ed25519 private key; without it the release is unsigned")
    _passphrase_option(p)
    p.add_argument("--metrics", metavar="FILE", help="JSON object of metric names to numbers, for the card")
    p.add_argument("--seed", type=int, action="append", default=[], metavar="N", help="record in the receipt")
    p.add_argument("--export", action="append", default=[], metavar="DIR", help="an export made from it")
    p.add_argument("--data", action="append", default=[], metavar="DIR", help="a data build it was trained on")
    p.add_argument("--model-signing-key", metavar="PEM", help="ECDSA key: also sign in the OpenSSF model-signing "
                   "format (needs the model-signing package); its passphrase from --passphrase-env too")
    p.set_defaults(run=_release)
    return parser


def _checkpoint_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", metavar="DIR", default=".", help="the checkpoint or export directory (default: .)")


def _passphrase_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--passphrase-env", metavar="NAME", help="read the key's passphrase from environment variable NAME")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = [PROG, *(sys.argv[1:] if argv is None else argv)]
    try:
        return int(args.run(args))
    except (f.GovernanceError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _sbom(args: argparse.Namespace) -> int:
    card = read_card(args.checkpoint)
    if args.format == "spdx":
        write_spdx(card, args.checkpoint, args.out)
    else:
        write_cyclonedx(card, args.out, content_id=checkpoint_id(args.checkpoint))
    print(args.out)
    return 0


def _sign(args: argparse.Namespace) -> int:
    key = load_private_key(args.key, passphrase_from_env(args.passphrase_env)) if args.key else None
    out = write_checksums(args.root, args.files, args.out)
    print(out)
    if key is not None:
        signature, public = out.with_name(out.name + ".sig"), out.with_name(f.PUBLIC_KEY)
        sign_file(out, key, signature, public)
        print(signature)
        print(public)
    return 0


def _keygen(args: argparse.Namespace) -> int:
    private, public = keygen(args.out, passphrase_from_env(args.passphrase_env), algorithm=args.algorithm)
    print(f"private key {private} (mode 0600), public key {public}")
    return 0


def _receipt(args: argparse.Namespace) -> int:
    inputs = {"seeds": args.seed, "config": args.config, "data_manifests": args.data_manifest,
              "checkpoint": args.checkpoint}
    if args.cmd:
        return run_with_receipt(args.cmd, args.out, **inputs)
    write_receipt(args.out, make_receipt(command=args.argv, started_at=now(), ended_at=now(), **inputs))
    print(args.out)
    return 0


def _lineage(args: argparse.Namespace) -> int:
    print(write_lineage(args.checkpoint, args.out, png=args.png, exports=args.export, data_dirs=args.data))
    return 0


def _card(args: argparse.Namespace) -> int:
    out = Path(args.out_dir)
    for path in write_card(args.checkpoint, out, metrics=args.metrics, sbom=args.sbom, receipt=args.receipt):
        print(path)
    return 0


def _verify(args: argparse.Namespace) -> int:
    problems = verify_release(args.directory, trusted_key=args.key, signed=not args.unsigned)
    return _report(args.directory, problems, signed=not args.unsigned)


def _release(args: argparse.Namespace) -> int:
    passphrase = passphrase_from_env(args.passphrase_env)
    problems = release(args.directory, key=args.key, passphrase=passphrase, command=args.argv, seeds=args.seed,
                       metrics=args.metrics, exports=args.export, data_dirs=args.data,
                       model_key=args.model_signing_key, model_passphrase=passphrase)
    return _report(args.directory, problems, signed=args.key is not None)


def _report(directory: str, problems: list[str], *, signed: bool) -> int:
    for problem in problems:
        print(problem)
    if problems:
        print(f"{directory}: release gate FAILED ({len(problems)} problem{'s' * (len(problems) != 1)})", file=sys.stderr)
        return 1
    print(f"{directory}: release verified ({'signed' if signed else 'unsigned'})")
    return 0
