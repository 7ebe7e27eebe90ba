"""``python -m governance release DIR [--key K]``: every artifact for a checkpoint or export directory, into
``DIR/artifacts/``, then the gate.

Order matters: the receipt, the SBOMs and the lineage first, the card (which summarises the SBOM and the
receipt) next, the checksums over the weights, config, model card, manifest and those artifacts after
that, and the signature over the checksum file last. Each file is written atomically; a release interrupted
half-way fails :func:`governance.gate.verify_release` until it is run again.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from governance import files as f
from governance.card import write_card
from governance.checkpoint import checkpoint_id, read_card
from governance.checksums import write_checksums
from governance.cyclonedx_sbom import write_cyclonedx
from governance.gate import covered_paths, verify_release
from governance.lineage import write_lineage
from governance.openssf import load_model_key, model_signing_package, sign_model
from governance.receipt import make_receipt, now, write_receipt
from governance.signing import load_private_key, sign_file
from governance.spdx_sbom import write_spdx


def release(directory: str | Path, *, key: str | Path | None = None, passphrase: bytes | None = None,
            command: Sequence[str] = (), seeds: Sequence[int] = (), metrics: str | Path | None = None,
            exports: Sequence[str | Path] = (), data_dirs: Sequence[str | Path] = (),
            model_key: str | Path | None = None, model_passphrase: bytes | None = None) -> list[str]:
    """Write the release artifacts of ``directory`` and return :func:`verify_release`'s problems (empty when
    the release passes). Without ``key`` the release is unsigned and checked as such. ``model_key`` (ECDSA)
    adds an OpenSSF model-signing signature of the checkpoint (:mod:`governance.openssf`)."""
    started = now()
    root = Path(directory)
    card = read_card(root)
    private = load_private_key(key, passphrase) if key is not None else None  # a bad key fails before any write
    if model_key is not None:
        load_model_key(model_key, model_passphrase)
        model_signing_package()
    art = root / f.ARTIFACTS_DIR
    art.mkdir(exist_ok=True)
    write_cyclonedx(card, art / f.SBOM_CDX, content_id=checkpoint_id(root))
    write_spdx(card, root, art / f.SBOM_SPDX)
    write_lineage(root, art / f.LINEAGE, exports=exports, data_dirs=data_dirs)
    write_receipt(art / f.RECEIPT, make_receipt(command=command, started_at=started, ended_at=now(), seeds=seeds,
                                                checkpoint=root))
    write_card(root, art, metrics=metrics, sbom=art / f.SBOM_CDX, receipt=art / f.RECEIPT)
    if model_key is not None:
        sign_model(root, model_key, model_passphrase)
    else:
        _remove_stale(art, f.MODEL_SIG, f.MODEL_SIG_KEY)
    write_checksums(root, [root / p for p in covered_paths(root, card)], art / f.CHECKSUMS)
    if private is not None:
        sign_file(art / f.CHECKSUMS, private, art / f.SIGNATURE, art / f.PUBLIC_KEY)
    else:
        _remove_stale(art, f.SIGNATURE, f.PUBLIC_KEY)
    return verify_release(root, signed=private is not None)


def _remove_stale(art: Path, *names: str) -> None:
    """A signature of an earlier release must not outlive it."""
    for name in names:
        (art / name).unlink(missing_ok=True)


def passphrase_from_env(name: str | None) -> bytes | None:
    """The passphrase held by environment variable ``name`` (never on the command line, where ``ps`` shows it)."""
    if name is None:
        return None
    value = os.environ.get(name)
    if not value:
        raise f.GovernanceError(f"--passphrase-env {name}: the environment variable is not set or empty")
    return value.encode("utf-8")
