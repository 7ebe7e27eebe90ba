"""Ed25519 keys and detached signatures over ``CHECKSUMS.sha256`` that ``openssl pkeyutl`` verifies.

The signature is the raw 64 bytes Ed25519 produces (no base64, no newline) over the checksum file's bytes,
and the public key is a SubjectPublicKeyInfo PEM, which is what
``openssl pkeyutl -verify -pubin -inkey PUB.pem -rawin -in CHECKSUMS.sha256 -sigfile CHECKSUMS.sha256.sig``
reads. Signing the checksum file rather than each artifact is the usual release practice (GnuPG over
SHA256SUMS): one signature covers every file it lists. Private keys are PKCS#8 PEM, encrypted when a
passphrase is given, and written with mode 0600 from the first byte.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from governance.files import GovernanceError, write_bytes

SIGNATURE_BYTES = 64


def public_key_path(private: str | os.PathLike[str]) -> Path:
    """Where :func:`keygen` puts the public half of ``private``: ``NAME.pub.pem`` beside ``NAME.pem``."""
    private = Path(private)
    stem = private.name[: -len(".pem")] if private.name.endswith(".pem") else private.name
    return private.with_name(stem + ".pub.pem")


def keygen(private: str | os.PathLike[str], passphrase: bytes | None = None, *,
           algorithm: Literal["ed25519", "ecdsa-p256"] = "ed25519") -> tuple[Path, Path]:
    """Make a key pair: the private key at ``private`` (mode 0600, PKCS#8 PEM, encrypted with ``passphrase``
    if given) and the public key beside it (:func:`public_key_path`). Refuses to replace a key. Ed25519 signs
    the checksum file; an ECDSA P-256 key is for the OpenSSF model-signing format (:mod:`governance.openssf`),
    whose key mode takes only ECDSA."""
    private = Path(private)
    public = public_key_path(private)
    for path in (private, public):
        if path.exists():
            raise GovernanceError(f"{path}: already exists; refusing to replace a key (remove it first)")
    key: Ed25519PrivateKey | ec.EllipticCurvePrivateKey = (
        Ed25519PrivateKey.generate() if algorithm == "ed25519" else ec.generate_private_key(ec.SECP256R1())
    )
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    )
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    write_bytes(private, pem, mode=0o600)
    write_bytes(public, public_pem(key.public_key()))
    return private, public


def public_pem(key: Ed25519PublicKey | ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_private_key(path: str | os.PathLike[str], passphrase: bytes | None = None) -> Ed25519PrivateKey:
    """The Ed25519 private key in the PEM file ``path``; a :class:`GovernanceError` for any unusable key."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise GovernanceError(f"{path}: cannot read the signing key ({exc.strerror})") from exc
    try:
        key = serialization.load_pem_private_key(data, password=passphrase)
    except TypeError as exc:  # encrypted without a passphrase, or a passphrase for a plain key
        raise GovernanceError(f"{path}: {exc} (pass the passphrase with --passphrase-env NAME)") from exc
    except ValueError as exc:
        raise GovernanceError(f"{path}: not a readable PEM private key, or a wrong passphrase") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise GovernanceError(f"{path}: a {type(key).__name__.lstrip('_')}, not an Ed25519 key (make one with keygen)")
    return key


def sign_file(target: str | os.PathLike[str], key: Ed25519PrivateKey, signature: str | os.PathLike[str],
              public: str | os.PathLike[str]) -> None:
    """Sign ``target``'s bytes: the raw signature to ``signature`` and the public key PEM to ``public``."""
    data = Path(target).read_bytes()
    write_bytes(signature, key.sign(data))
    write_bytes(public, public_pem(key.public_key()))


def public_key_bytes(path: Path) -> bytes | None:
    """The raw bytes of the public key in the PEM file ``path`` (None if it holds none), so that two files
    holding one key compare equal whatever their PEM line breaks."""
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError):
        return None
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def signature_problems(target: Path, signature: Path, public: Path) -> list[str]:
    """Why ``signature`` is not a valid Ed25519 signature of ``target`` by the key in ``public`` (empty if it is)."""
    for path in (target, signature, public):
        if not path.is_file():
            return [f"{path.name}: missing"]
    try:
        key = serialization.load_pem_public_key(public.read_bytes())
    except ValueError:
        return [f"{public.name}: not a PEM public key"]
    if not isinstance(key, Ed25519PublicKey):
        return [f"{public.name}: not an Ed25519 public key"]
    sig = signature.read_bytes()
    if len(sig) != SIGNATURE_BYTES:
        return [f"{signature.name}: {len(sig)} bytes, an Ed25519 signature is {SIGNATURE_BYTES} raw bytes"]
    try:
        key.verify(sig, target.read_bytes())
    except InvalidSignature:
        return [f"{signature.name}: bad signature: {target.name} was not signed by the key in {public.name}"]
    return []
