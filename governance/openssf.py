"""An OpenSSF model-signing signature of a checkpoint directory (``artifacts/model.sig``), optional.

The format is the OpenSSF model-signing project's (a Sigstore bundle holding an in-toto statement with the
sha256 of every file of the model directory), made and checked with its own ``model_signing`` package, so its
``model_signing verify key DIR --signature DIR/artifacts/model.sig --public_key artifacts/ecdsa.pub.pem
--ignore-paths DIR/artifacts`` accepts it. Its key mode takes ECDSA keys (P-256/384/521), not Ed25519: make one
with ``keygen --algorithm ecdsa-p256``. The release folder ``artifacts/`` is left out of what is signed, as
it is left out of the checkpoint's manifest. ``model_signing`` is imported only here and only when used: it is
not a dependency of the plane.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from governance.files import ARTIFACTS_DIR, MODEL_SIG, MODEL_SIG_KEY, GovernanceError, write_bytes
from governance.signing import public_pem


def model_signing_package() -> Any:
    """The ``model_signing`` module; a :class:`GovernanceError` when it is not installed (or broken)."""
    try:
        import model_signing
    except ImportError as exc:
        raise GovernanceError(f"OpenSSF model signing needs the model-signing package ({exc})") from exc
    return model_signing


def load_model_key(key: str | Path, passphrase: bytes | None = None) -> ec.EllipticCurvePrivateKey:
    """The ECDSA private key in the PEM file ``key``; a :class:`GovernanceError` for any unusable key."""
    key = Path(key)
    try:
        private = serialization.load_pem_private_key(key.read_bytes(), password=passphrase)
    except OSError as exc:
        raise GovernanceError(f"{key}: cannot read the model-signing key ({exc.strerror})") from exc
    except (TypeError, ValueError) as exc:
        raise GovernanceError(f"{key}: not a readable PEM private key, or a wrong passphrase ({exc})") from exc
    if not isinstance(private, ec.EllipticCurvePrivateKey):
        raise GovernanceError(f"{key}: OpenSSF model signing takes an ECDSA key (keygen --algorithm ecdsa-p256)")
    return private


def sign_model(directory: str | Path, key: str | Path, passphrase: bytes | None = None) -> Path:
    """Sign ``directory`` (without its ``artifacts/``) into ``artifacts/model.sig``, with the public key
    beside it as ``ecdsa.pub.pem``; return the signature's path."""
    root = Path(directory).resolve()
    private = load_model_key(key, passphrase)
    ms = model_signing_package()
    art = root / ARTIFACTS_DIR
    hashing = ms.hashing.Config().set_ignored_paths(paths=[art])  # absolute: relative ones are not matched
    signer = ms.signing.Config().use_elliptic_key_signer(
        private_key=key, password=passphrase.decode("utf-8") if passphrase else None)
    staging = art / f".{MODEL_SIG}.{os.getpid()}.tmp"  # the library writes in place: sign, then rename
    try:
        signer.set_hashing_config(hashing).sign(root, staging)
        os.replace(staging, art / MODEL_SIG)
    finally:
        staging.unlink(missing_ok=True)
    write_bytes(art / MODEL_SIG_KEY, public_pem(private.public_key()))
    return art / MODEL_SIG


def model_signature_problems(directory: str | Path, public_key: Path) -> list[str]:
    """Why ``artifacts/model.sig`` does not verify against ``public_key`` (empty when it does)."""
    root = Path(directory).resolve()
    art = root / ARTIFACTS_DIR
    if not public_key.is_file():
        return [f"{ARTIFACTS_DIR}/{MODEL_SIG_KEY}: missing (the public key of {MODEL_SIG})"]
    try:
        ms = model_signing_package()
    except GovernanceError as exc:
        return [f"{MODEL_SIG}: cannot check: {exc}"]
    verifier = ms.verifying.Config().use_elliptic_key_verifier(public_key=public_key)
    try:
        verifier.set_hashing_config(ms.hashing.Config().set_ignored_paths(paths=[art])).verify(root, art / MODEL_SIG)
    except Exception as exc:  # the library raises ValueError and its own errors for every kind of mismatch
        return [f"{MODEL_SIG}: OpenSSF model signature does not verify: {' '.join(str(exc).split())}"]
    return []
