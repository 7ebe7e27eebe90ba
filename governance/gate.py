"""The release gate (DESIGN.md section 4): ``python -m governance verify DIR``.

DIR is a checkpoint or export directory released by :func:`governance.release.release`, with its artifacts in
``DIR/artifacts/``. It passes only when every artifact is there, every line of ``CHECKSUMS.sha256`` is
well-formed and matches its file, the checksums cover the weights, config, model card, manifest and every
other artifact, the Ed25519 signature over them holds (against a trusted public key when one is given), both
SBOMs validate against their schemas and describe this model, the receipt and lineage are complete, the
release card and the checkpoint's own card still describe the files beside them, and an OpenSSF model
signature, when the release has one, verifies. Every problem is one line.
Needs no GPU and imports no model code.
"""

from __future__ import annotations

import json
from pathlib import Path

from governance import files as f
from governance.card import card_mismatch
from governance.checkpoint import card_problems, read_card
from governance.checksums import check_checksums
from governance.cyclonedx_sbom import cyclonedx_errors, model_ref
from governance.lineage import lineage_problems
from governance.openssf import model_signature_problems
from governance.receipt import receipt_problems
from governance.signing import public_key_bytes, signature_problems
from governance.spdx_sbom import spdx_errors, spdx_mismatch
from specs.card import ModelCard

CHECKSUMMED_ARTIFACTS = (f.SBOM_CDX, f.SBOM_SPDX, f.RECEIPT, f.LINEAGE, f.CARD_MD, f.CARD_JSON)
SIGNING_ARTIFACTS = (f.SIGNATURE, f.PUBLIC_KEY)


def covered_paths(root: Path, card: ModelCard) -> list[str]:
    """What the checksum file of a release must list, relative to the released directory."""
    own = [p for p in (f.CONFIG, f.MODELCARD, f.MANIFEST, f"{f.ARTIFACTS_DIR}/{f.MODEL_SIG}") if (root / p).is_file()]
    return sorted({*(ref.path for ref in card.files), *own, *(f"{f.ARTIFACTS_DIR}/{a}" for a in CHECKSUMMED_ARTIFACTS)})


def verify_release(directory: str | Path, *, trusted_key: str | Path | None = None, signed: bool = True) -> list[str]:
    """Every problem of the release in ``directory``, one line each (empty: the release passes the gate)."""
    root = Path(directory)
    if trusted_key is not None and not Path(trusted_key).is_file():
        raise f.GovernanceError(f"{trusted_key}: no such public key file")
    if not root.is_dir():
        return [f"{root}: not a directory"]
    art = root / f.ARTIFACTS_DIR
    if not art.is_dir():
        return [f"{f.ARTIFACTS_DIR}/: missing (make the release with: python -m governance release {root})"]
    card: ModelCard | None = None
    try:
        card = read_card(root)
    except f.GovernanceError as exc:
        problems = [str(exc)]
    else:
        problems = card_problems(root, card)
    wanted = [*CHECKSUMMED_ARTIFACTS, f.CHECKSUMS, *(SIGNING_ARTIFACTS if signed else ())]
    problems += [f"{f.ARTIFACTS_DIR}/{name}: missing" for name in wanted if not (art / name).is_file()]
    entries, checksum_problems = check_checksums(root, art / f.CHECKSUMS)
    problems += [p for p in checksum_problems if not p.endswith(f"{f.CHECKSUMS}: missing")]
    if card is not None and entries:
        problems += [f"{p}: not covered by {f.CHECKSUMS}" for p in covered_paths(root, card) if p not in entries]
    if signed and (art / f.CHECKSUMS).is_file() and (art / f.SIGNATURE).is_file() and (art / f.PUBLIC_KEY).is_file():
        # with a trusted key the signature must hold against it: the release's own key proves integrity only
        problems += signature_problems(art / f.CHECKSUMS, art / f.SIGNATURE, Path(trusted_key or art / f.PUBLIC_KEY))
        if trusted_key is not None and public_key_bytes(Path(trusted_key)) != public_key_bytes(art / f.PUBLIC_KEY):
            problems.append(f"{f.PUBLIC_KEY}: not the trusted key {trusted_key}; the release was signed by someone else")
    if (art / f.MODEL_SIG).is_file():  # optional: an OpenSSF model-signing signature
        problems += model_signature_problems(root, art / f.MODEL_SIG_KEY)
    if (art / f.SBOM_CDX).is_file():
        problems += [f"{f.SBOM_CDX}: {e}" for e in _cyclonedx_problems(art / f.SBOM_CDX, card)]
    if (art / f.SBOM_SPDX).is_file():
        spdx = [f"{f.SBOM_SPDX}: schema error: {e}" for e in spdx_errors(art / f.SBOM_SPDX)]
        problems += spdx or ([f"{f.SBOM_SPDX}: {e}" for e in spdx_mismatch(art / f.SBOM_SPDX, card)] if card else [])
    if (art / f.RECEIPT).is_file():
        problems += receipt_problems(art / f.RECEIPT)
    if card is not None and (art / f.LINEAGE).is_file():
        problems += lineage_problems(art / f.LINEAGE, root, card)
    if card is not None and (art / f.CARD_JSON).is_file():
        problems += card_mismatch(art / f.CARD_JSON, root, card)
    return problems


def _cyclonedx_problems(path: Path, card: ModelCard | None) -> list[str]:
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        bom = json.loads(text)
    except json.JSONDecodeError as exc:
        return [f"schema error: not valid JSON ({exc})"]
    errors = [f"schema error: {e}" for e in cyclonedx_errors(text)]
    if errors or card is None:
        return errors
    component = bom.get("metadata", {}).get("component", {})
    if component.get("bom-ref") != model_ref(card) or "modelCard" not in component:
        return [f"the model component is not {model_ref(card)} with a modelCard"]
    hashes = {c.get("name"): [h.get("content") for h in c.get("hashes", [])] for c in component.get("components", [])}
    return [f"{ref.path}: sha256 in the SBOM differs from {f.MODELCARD}" for ref in card.files
            if hashes.get(ref.path) != [ref.sha256]]
