"""``SBOM.cdx.json``: a CycloneDX 1.6 BOM of a model and the Python environment around it.

The BOM is built with cyclonedx-python-lib: the model is ``metadata.component``, of type
``machine-learning-model``, with one nested ``file`` component per checkpoint file (sha256 from the model
card); each training data set is a ``data`` component; every installed distribution is a ``library`` with its
version, licence, purl and RECORD hash (:mod:`governance.environment`), and the dependency graph follows the
distributions' requirements. The library cannot write a component's ``modelCard`` (its feature request
#912), so the card is added to the serialised JSON, and the result is checked with the library's strict JSON
validator against the 1.6 schema before it is written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cyclonedx.model import HashAlgorithm, HashType, Property
from cyclonedx.model.bom import Bom
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.model.license import DisjunctiveLicense, LicenseExpression
from cyclonedx.output.json import JsonV1Dot6
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from packageurl import PackageURL

from governance.environment import Package, installed_packages, valid_spdx
from governance.files import write_text
from specs.card import ModelCard

RECORD_NOTE = "sha256 of the installed dist-info RECORD (which lists the sha256 of every installed file)"


def model_ref(card: ModelCard) -> str:
    return f"model:{card.name}@{card.model_version}"


def build_cyclonedx(card: ModelCard, *, content_id: str | None = None, packages: tuple[Package, ...] | None = None) -> str:
    """The BOM as JSON text (validated), for the model ``card`` describes."""
    packages = installed_packages() if packages is None else packages
    files = [
        Component(name=ref.path, type=ComponentType.FILE, bom_ref=f"file:{ref.path}",
                  hashes=[HashType(alg=HashAlgorithm.SHA_256, content=ref.sha256)],
                  properties=[Property(name="lmplanes:size", value=str(ref.size))])
        for ref in card.files
    ]
    props = {"architecture": card.architecture, "parameters": str(card.parameters), "dtype": card.dtype,
             "content_id": content_id, "code_revision": card.code_revision, "created_at": card.created_at}
    model = Component(
        name=card.name, version=card.model_version, type=ComponentType.MACHINE_LEARNING_MODEL,
        bom_ref=model_ref(card), licenses=_licenses(card.license, None), components=files,
        properties=[Property(name=f"lmplanes:{k}", value=v) for k, v in props.items() if v],
    )
    data = [
        Component(name=ref.name, type=ComponentType.DATA, bom_ref=_data_ref(ref.name, ref.sha256),
                  hashes=[HashType(alg=HashAlgorithm.SHA_256, content=ref.sha256)],
                  properties=[Property(name="lmplanes:uri", value=ref.uri)])
        for ref in card.training_data
    ]
    libraries = {p.key: _library(p) for p in packages}
    bom = Bom()
    bom.metadata.component = model
    for component in [*data, *libraries.values()]:
        bom.components.add(component)
    required = {key for p in packages for key in p.requires}
    roots = [libraries["lmplanes"]] if "lmplanes" in libraries else [libraries[p.key] for p in packages
                                                                      if p.key not in required]
    bom.register_dependency(model, [*data, *roots])
    for p in packages:
        bom.register_dependency(libraries[p.key], [libraries[k] for k in p.requires])
    document = json.loads(JsonV1Dot6(bom).output_as_string())
    document["metadata"]["component"]["modelCard"] = model_card_section(card)
    text = json.dumps(document, indent=2, sort_keys=False) + "\n"
    errors = cyclonedx_errors(text)
    if errors:  # our own builder produced something the schema refuses: a bug, not a user mistake
        raise AssertionError("the CycloneDX BOM does not validate: " + "; ".join(errors))
    return text


def write_cyclonedx(card: ModelCard, out: str | Path, *, content_id: str | None = None) -> Path:
    return write_text(out, build_cyclonedx(card, content_id=content_id))


def model_card_section(card: ModelCard) -> dict[str, Any]:
    """The component's ``modelCard`` (CycloneDX 1.6 ``#/definitions/modelCard``) from our card."""
    params: dict[str, Any] = {
        "approach": {"type": "self-supervised"},
        "task": "text-generation" if card.architecture != "encoder" else "fill-mask",
        "architectureFamily": "transformer",
        "modelArchitecture": card.architecture,
        "inputs": [{"format": "token ids"}],
        "outputs": [{"format": "logits" if card.architecture != "encoder" else "hidden states"}],
    }
    if card.training_data:
        params["datasets"] = [{"ref": _data_ref(r.name, r.sha256)} for r in card.training_data]
    section: dict[str, Any] = {"bom-ref": f"modelcard:{card.name}@{card.model_version}", "modelParameters": params}
    if card.metrics:
        section["quantitativeAnalysis"] = {
            "performanceMetrics": [{"type": k, "value": repr(v)} for k, v in sorted(card.metrics.items())]
        }
    considerations: dict[str, Any] = {"useCases": [card.intended_use]}
    if card.limitations:
        considerations["technicalLimitations"] = [card.limitations]
    section["considerations"] = considerations
    return section


def cyclonedx_errors(text: str) -> list[str]:
    """Every error the library's strict JSON validator finds against CycloneDX 1.6 (empty when valid)."""
    found = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text, all_errors=True)
    return [] if found is None else [_describe(e) for e in found]


def _describe(error: Any) -> str:
    inner = getattr(error, "data", None)
    where = "/".join(str(p) for p in getattr(inner, "absolute_path", []) or [])
    message = getattr(inner, "message", None) or str(error)
    return f"{where or '(document)'}: {message}"


def _library(p: Package) -> Component:
    properties = [Property(name="lmplanes:hash-of", value=RECORD_NOTE)] if p.record_sha256 else []
    return Component(
        name=p.name, version=p.version, type=ComponentType.LIBRARY, bom_ref=p.purl,
        purl=PackageURL.from_string(p.purl), licenses=_licenses(p.spdx_license, p.license_name),
        hashes=[HashType(alg=HashAlgorithm.SHA_256, content=p.record_sha256)] if p.record_sha256 else [],
        properties=properties,
    )


def _licenses(spdx: str | None, name: str | None) -> list[Any]:
    if spdx and valid_spdx(spdx):
        return [LicenseExpression(spdx)]
    if name:
        return [DisjunctiveLicense(name=name)]
    return []


def _data_ref(name: str, sha256: str) -> str:
    return f"data:{name}:{sha256[:16]}"
