"""``SBOM.spdx.json``: the same inventory as the CycloneDX BOM, as an SPDX 2.3 JSON document.

The document DESCRIBES the model package, which CONTAINS its checkpoint files (each with the SHA1 SPDX 2.3
requires and a SHA256) and was GENERATED_FROM its training data sets; every installed distribution is a
LIBRARY package with its purl, declared licence (a valid SPDX expression, else NOASSERTION) and RECORD hash,
linked by DEPENDS_ON as their requirements say. SPDX 2.3 has no machine-learning package purpose (3.0 adds
one), so the model is OTHER, described in its comment. Validation is spdx-tools' own parser and full
validator, the library behind ``pyspdxtools -i``.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from governance.environment import Package, installed_packages, valid_spdx
from governance.files import write_text
from specs.card import ModelCard

NOASSERTION = "NOASSERTION"


def build_spdx(card: ModelCard, directory: str | Path, *, packages: tuple[Package, ...] | None = None) -> str:
    """The SPDX document as JSON text, for the model ``card`` describes, whose files lie in ``directory``."""
    packages = installed_packages() if packages is None else packages
    root = Path(directory)
    model_id = "SPDXRef-Model"
    spdx_packages: list[dict[str, Any]] = [{
        "SPDXID": model_id, "name": card.name, "versionInfo": card.model_version,
        "downloadLocation": NOASSERTION, "filesAnalyzed": True, "primaryPackagePurpose": "OTHER",
        "licenseConcluded": NOASSERTION, "copyrightText": NOASSERTION,
        "licenseDeclared": card.license if valid_spdx(card.license) else NOASSERTION,
        "comment": f"machine-learning model: {card.architecture}, {card.parameters} parameters, {card.dtype}",
    }]
    relationships = [_rel("SPDXRef-DOCUMENT", "DESCRIBES", model_id)]
    files = []
    sha1s = []
    for i, ref in enumerate(card.files):
        file_id = f"SPDXRef-File-{i}"
        sha1s.append(_sha1(root / ref.path))
        files.append({
            "SPDXID": file_id, "fileName": f"./{ref.path}",
            "checksums": [{"algorithm": "SHA1", "checksumValue": sha1s[-1]},
                          {"algorithm": "SHA256", "checksumValue": ref.sha256}],
            "licenseConcluded": NOASSERTION, "copyrightText": NOASSERTION,
        })
        relationships.append(_rel(model_id, "CONTAINS", file_id))
    # SPDX 2.3 clause 7.9: the SHA1 of the sorted, concatenated SHA1s of the package's files
    code = hashlib.sha1("".join(sorted(sha1s)).encode("ascii")).hexdigest()
    spdx_packages[0]["packageVerificationCode"] = {"packageVerificationCodeValue": code}
    for i, data in enumerate(card.training_data):
        data_id = f"SPDXRef-Data-{i}"
        spdx_packages.append({
            "SPDXID": data_id, "name": data.name, "downloadLocation": NOASSERTION, "filesAnalyzed": False,
            "primaryPackagePurpose": "OTHER", "licenseConcluded": NOASSERTION, "licenseDeclared": NOASSERTION,
            "copyrightText": NOASSERTION, "checksums": [{"algorithm": "SHA256", "checksumValue": data.sha256}],
            "comment": f"training data set {data.uri}",
        })
        relationships.append(_rel(model_id, "GENERATED_FROM", data_id))
    ids = {p.key: f"SPDXRef-Package-{i}" for i, p in enumerate(packages)}
    for p in packages:
        entry: dict[str, Any] = {
            "SPDXID": ids[p.key], "name": p.name, "versionInfo": p.version, "downloadLocation": NOASSERTION,
            "filesAnalyzed": False, "primaryPackagePurpose": "LIBRARY", "licenseConcluded": NOASSERTION,
            "licenseDeclared": p.spdx_license or NOASSERTION, "copyrightText": NOASSERTION,
            "externalRefs": [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl",
                              "referenceLocator": p.purl}],
        }
        if p.record_sha256:
            entry["checksums"] = [{"algorithm": "SHA256", "checksumValue": p.record_sha256}]
            entry["comment"] = "checksum: sha256 of the installed dist-info RECORD"
        if p.license_name:
            entry["licenseComments"] = f"declared in the package metadata as: {p.license_name}"
        spdx_packages.append(entry)
        relationships += [_rel(ids[p.key], "DEPENDS_ON", ids[k]) for k in p.requires]
    required = {k for p in packages for k in p.requires}
    roots = ["lmplanes"] if "lmplanes" in ids else [p.key for p in packages if p.key not in required]
    relationships += [_rel(model_id, "DEPENDS_ON", ids[k]) for k in roots]
    document = {
        "spdxVersion": "SPDX-2.3", "dataLicense": "CC0-1.0", "SPDXID": "SPDXRef-DOCUMENT",
        "name": f"{card.name}-{card.model_version}",
        "documentNamespace": f"https://spdx.org/spdxdocs/lmplanes-{card.name}-{uuid.uuid4()}",
        "creationInfo": {"created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                         "creators": ["Tool: lmplanes-governance"]},
        "packages": spdx_packages, "files": files, "relationships": relationships,
    }
    return json.dumps(document, indent=2) + "\n"


def write_spdx(card: ModelCard, directory: str | Path, out: str | Path) -> Path:
    return write_text(out, build_spdx(card, directory))


def spdx_errors(path: str | Path) -> list[str]:
    """Every problem spdx-tools finds parsing and validating the SPDX JSON file ``path`` (empty when valid)."""
    try:
        from spdx_tools.spdx.parser.error import SPDXParsingError
        from spdx_tools.spdx.parser.parse_anything import parse_file
        from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document
    except ImportError:
        return ["cannot validate SPDX: spdx-tools is not installed (pip install 'lmplanes[governance]')"]
    try:
        document = parse_file(str(path))
    except SPDXParsingError as exc:
        return [f"does not parse as SPDX: {m}" for m in exc.get_messages()]
    except (ValueError, KeyError, TypeError) as exc:  # malformed JSON, or a structure the parser cannot walk
        return [f"does not parse as SPDX: {exc}"]
    return [m.validation_message for m in validate_full_spdx_document(document)]


def spdx_mismatch(path: str | Path, card: ModelCard) -> list[str]:
    """Where a valid SPDX document does not describe the model of ``card`` (its name, its files' SHA256)."""
    document = json.loads(Path(path).read_text(encoding="utf-8"))
    model = next((p for p in document.get("packages", []) if p.get("SPDXID") == "SPDXRef-Model"), None)
    if model is None or model.get("name") != card.name:
        return [f"no model package {card.name!r}"]
    found = {e["fileName"].removeprefix("./"): {c["algorithm"]: c["checksumValue"] for c in e.get("checksums", [])}
             for e in document.get("files", [])}
    return [f"{ref.path}: SHA256 differs from modelcard.json" for ref in card.files
            if found.get(ref.path, {}).get("SHA256") != ref.sha256]


def _rel(a: str, kind: str, b: str) -> dict[str, str]:
    return {"spdxElementId": a, "relationshipType": kind, "relatedSpdxElement": b}


def _sha1(path: Path) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
