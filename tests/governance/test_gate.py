"""The release gate: a fresh release passes, and each kind of tampering is caught by ``verify`` AND by the
standard tool for the artifact (``sha256sum --strict -c``, ``openssl pkeyutl -verify``, the CycloneDX validator)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

import governance
import model
from governance.cyclonedx_sbom import cyclonedx_errors

ART = "artifacts"
needs_sha256sum = pytest.mark.skipif(shutil.which("sha256sum") is None, reason="GNU sha256sum is not installed")
needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")


def sha256sum_ok(root: Path) -> bool:
    done = subprocess.run(["sha256sum", "--strict", "-c", f"{ART}/CHECKSUMS.sha256"], cwd=root,
                          capture_output=True, text=True)
    return done.returncode == 0


def openssl_ok(root: Path, public: Path | None = None) -> bool:
    art = root / ART
    done = subprocess.run(
        ["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", str(public or art / "ed25519.pub.pem"), "-rawin",
         "-in", str(art / "CHECKSUMS.sha256"), "-sigfile", str(art / "CHECKSUMS.sha256.sig")],
        capture_output=True, text=True)
    return done.returncode == 0 and "Signature Verified Successfully" in done.stdout


@needs_sha256sum
@needs_openssl
def test_a_fresh_release_passes_the_gate_and_the_standard_tools(released_once, key_pair):
    art = released_once / ART
    assert sorted(p.name for p in art.iterdir()) == sorted([
        "SBOM.cdx.json", "SBOM.spdx.json", "CHECKSUMS.sha256", "CHECKSUMS.sha256.sig", "ed25519.pub.pem",
        "RECEIPT.json", "LINEAGE.dot", "MODEL_CARD.md", "MODEL_CARD.json"])
    assert governance.verify_release(released_once, trusted_key=key_pair[1]) == []
    assert sha256sum_ok(released_once) and openssl_ok(released_once, key_pair[1])
    listed = [line.split(" *", 1)[1] for line in (art / "CHECKSUMS.sha256").read_text().splitlines()]
    shards = sorted(p.name for p in released_once.glob("model-*.safetensors"))
    assert len(shards) == 3 and set(shards) <= set(listed)
    assert {"config.json", "modelcard.json", "MANIFEST.json", f"{ART}/SBOM.cdx.json"} <= set(listed)
    # the artifacts live inside the checkpoint, which still verifies and loads as one
    assert model.verify_checkpoint(released_once) == []


@needs_sha256sum
def test_flipped_byte_in_a_weight_shard(released):
    shard = sorted(released.glob("model-*.safetensors"))[1]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    problems = governance.verify_release(released)
    assert any(p.startswith(f"{shard.name}: checksum mismatch") for p in problems)
    assert any(p.startswith(shard.name) and "modelcard.json" in p for p in problems)  # card/checkpoint mismatch
    assert not sha256sum_ok(released)


@needs_sha256sum
@needs_openssl
def test_edited_checksum_line(released):
    sums = released / ART / "CHECKSUMS.sha256"
    lines = sums.read_text().splitlines(keepends=True)
    lines[0] = ("0" if lines[0][0] != "0" else "1") + lines[0][1:]
    sums.write_text("".join(lines))
    name = lines[0].split(" *", 1)[1].strip()
    problems = governance.verify_release(released)
    assert f"{name}: checksum mismatch" in "\n".join(problems)
    assert any("bad signature" in p for p in problems)
    assert not sha256sum_ok(released) and not openssl_ok(released)


@needs_sha256sum
def test_malformed_checksum_line(released):
    sums = released / ART / "CHECKSUMS.sha256"
    sums.write_text(sums.read_text() + "not a checksum line\n")
    problems = governance.verify_release(released)
    assert any("CHECKSUMS.sha256 line" in p and "malformed" in p for p in problems)
    assert not sha256sum_ok(released)  # only because of --strict: plain -c would warn and pass


@needs_openssl
def test_swapped_public_key(released, tmp_path, key_pair):
    _, other_public = governance.keygen(tmp_path / "other.pem")
    shutil.copy(other_public, released / ART / "ed25519.pub.pem")
    problems = governance.verify_release(released)
    assert problems == ["CHECKSUMS.sha256.sig: bad signature: CHECKSUMS.sha256 was not signed by the key in "
                        "ed25519.pub.pem"]
    assert not openssl_ok(released)


@needs_openssl
def test_a_release_re_signed_by_someone_else_fails_against_the_trusted_key(released, tmp_path, key_pair):
    other, _ = governance.keygen(tmp_path / "other.pem")
    art = released / ART
    governance.sign_file(art / "CHECKSUMS.sha256", governance.load_private_key(other), art / "CHECKSUMS.sha256.sig",
                         art / "ed25519.pub.pem")
    assert governance.verify_release(released) == []  # consistent on its own ...
    problems = governance.verify_release(released, trusted_key=key_pair[1])
    assert problems == [
        "CHECKSUMS.sha256.sig: bad signature: CHECKSUMS.sha256 was not signed by the key in release.pub.pem",
        f"ed25519.pub.pem: not the trusted key {key_pair[1]}; the release was signed by someone else"]
    assert not openssl_ok(released, key_pair[1])  # ... but not by the key we trust


@needs_sha256sum
@pytest.mark.parametrize("name", ["RECEIPT.json", "LINEAGE.dot", "SBOM.spdx.json", "CHECKSUMS.sha256.sig"])
def test_removed_artifact(released, name):
    (released / ART / name).unlink()
    problems = governance.verify_release(released)
    assert f"{ART}/{name}: missing" in problems
    if name != "CHECKSUMS.sha256.sig":  # the signature is not listed in the file it signs
        assert not sha256sum_ok(released)


def test_removed_weight_shard(released):
    shard = sorted(released.glob("model-*.safetensors"))[0]
    shard.unlink()
    problems = governance.verify_release(released)
    assert f"{shard.name}: listed in CHECKSUMS.sha256 but missing" in problems


@needs_sha256sum
def test_sbom_with_a_bad_field(released):
    sbom = released / ART / "SBOM.cdx.json"
    bom = json.loads(sbom.read_text())
    bom["metadata"]["component"]["type"] = "neural-network"  # not a CycloneDX component type
    text = json.dumps(bom)
    sbom.write_text(text)
    assert cyclonedx_errors(text)  # the library's strict validator: the standard tool for CycloneDX
    problems = governance.verify_release(released)
    assert any(p.startswith("SBOM.cdx.json: schema error: metadata/component/type") for p in problems)
    assert not sha256sum_ok(released)


def test_spdx_with_a_bad_field(released):
    sbom = released / ART / "SBOM.spdx.json"
    doc = json.loads(sbom.read_text())
    doc["files"][0]["checksums"][0]["checksumValue"] = "xyz"  # not a SHA1
    sbom.write_text(json.dumps(doc))
    assert any(p.startswith("SBOM.spdx.json: schema error") for p in governance.verify_release(released))
    assert subprocess.run(["pyspdxtools", "-i", str(sbom)], capture_output=True).returncode != 0


def test_sboms_that_describe_other_files(released):
    """Schema-valid SBOMs whose file hashes are not the checkpoint's (e.g. copied from another release)."""
    art = released / ART
    bom = json.loads((art / "SBOM.cdx.json").read_text())
    bom["metadata"]["component"]["components"][0]["hashes"][0]["content"] = "0" * 64
    (art / "SBOM.cdx.json").write_text(json.dumps(bom))
    doc = json.loads((art / "SBOM.spdx.json").read_text())
    doc["files"][0]["checksums"][1]["checksumValue"] = "0" * 64
    (art / "SBOM.spdx.json").write_text(json.dumps(doc))
    name = bom["metadata"]["component"]["components"][0]["name"]
    problems = governance.verify_release(released)
    assert f"SBOM.cdx.json: {name}: sha256 in the SBOM differs from modelcard.json" in problems
    assert f"SBOM.spdx.json: {doc['files'][0]['fileName'][2:]}: SHA256 differs from modelcard.json" in problems


def test_card_that_no_longer_matches_the_checkpoint(released):
    card = released / ART / "MODEL_CARD.json"
    document = json.loads(card.read_text())
    document["card"]["parameters"] += 1
    card.write_text(json.dumps(document))
    problems = governance.verify_release(released)
    assert "MODEL_CARD.json: card/checkpoint mismatch: its card differs from modelcard.json" in problems


def test_an_unsigned_release(released):
    for name in ("CHECKSUMS.sha256.sig", "ed25519.pub.pem"):
        (released / ART / name).unlink()
    assert governance.verify_release(released, signed=False) == []
    assert len(governance.verify_release(released)) == 2  # both signing files missing


def test_no_release_at_all(checkpoint):
    assert governance.verify_release(checkpoint) == [
        f"{ART}/: missing (make the release with: python -m governance release {checkpoint})"]


def test_a_released_checkpoint_loads_and_can_be_replaced(released):
    lm = model.load_checkpoint(released)
    model.save_checkpoint(lm, released, overwrite=True)  # its release is stale now, and goes with it
    assert not (released / ART).exists() and model.verify_checkpoint(released) == []
    (released / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="notes.txt"):  # anything else is still someone's file
        model.save_checkpoint(lm, released, overwrite=True)


def _model_signing_cli() -> str | None:
    try:
        import model_signing  # noqa: F401  (a broken install, e.g. without pyOpenSSL, fails here)
    except ImportError:
        return None
    return shutil.which("model_signing")


@pytest.mark.skipif(_model_signing_cli() is None, reason="the OpenSSF model-signing package is not installed")
def test_openssf_model_signature_verified_by_model_signing(released, tmp_path):
    ec_key, ec_public = governance.keygen(tmp_path / "ecdsa.pem", algorithm="ecdsa-p256")
    assert governance.release(released, key=None, model_key=ec_key) == []  # unsigned checksums, signed model
    art = released / ART
    assert "artifacts/model.sig" in (art / "CHECKSUMS.sha256").read_text()

    def model_signing_verify() -> subprocess.CompletedProcess:
        return subprocess.run([str(_model_signing_cli()), "verify", "key", str(released), "--signature",
                               str(art / "model.sig"), "--public_key", str(ec_public), "--ignore-paths", str(art)],
                              capture_output=True, text=True)

    assert model_signing_verify().returncode == 0
    shard = sorted(released.glob("model-*.safetensors"))[0]
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF
    shard.write_bytes(bytes(data))
    assert model_signing_verify().returncode != 0
    problems = governance.verify_release(released, signed=False)
    assert any(p.startswith("model.sig: OpenSSF model signature does not verify") for p in problems)


def test_model_signing_refuses_an_ed25519_key(released, key_pair):
    with pytest.raises(governance.GovernanceError, match="takes an ECDSA key"):
        governance.release(released, model_key=key_pair[0])
