"""Both SBOMs, checked by their standard validators: the CycloneDX library's strict JSON validator against the
1.6 schema, and spdx-tools' ``pyspdxtools -i``; and their content against the checkpoint and the environment."""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import json
import re
import shutil
import subprocess

import pytest

import governance
from governance.checkpoint import read_card
from governance.cyclonedx_sbom import cyclonedx_errors
from governance.environment import normalise
from tests.governance.conftest import DATA_SHA


@pytest.fixture(scope="module")
def cdx(checkpoint):
    return governance.build_cyclonedx(read_card(checkpoint))


def test_cyclonedx_validates_strictly_against_1_6(cdx):
    assert cyclonedx_errors(cdx) == []
    bom = json.loads(cdx)
    assert (bom["bomFormat"], bom["specVersion"]) == ("CycloneDX", "1.6")


def test_the_model_component_carries_a_model_card_and_the_file_hashes(cdx, checkpoint):
    card = read_card(checkpoint)
    component = json.loads(cdx)["metadata"]["component"]
    assert component["type"] == "machine-learning-model" and component["name"] == "llama-tiny"
    assert component["licenses"] == [{"expression": "Apache-2.0"}]
    files = {c["name"]: c["hashes"] for c in component["components"]}
    assert files == {ref.path: [{"alg": "SHA-256", "content": ref.sha256}] for ref in card.files}
    for ref in card.files:  # the card's hashes are the files' hashes
        assert hashlib.sha256((checkpoint / ref.path).read_bytes()).hexdigest() == ref.sha256
    model_card = component["modelCard"]
    assert model_card["modelParameters"]["datasets"] == [{"ref": f"data:tinyshakespeare:{DATA_SHA[:16]}"}]
    assert {"type": "val_loss", "value": "2.5"} in model_card["quantitativeAnalysis"]["performanceMetrics"]


def test_the_modelcard_is_what_the_validator_checks(cdx):
    """The modelCard is added after the library serialises; the validator must still see it (a wrong field
    in it is an error)."""
    bom = json.loads(cdx)
    bom["metadata"]["component"]["modelCard"]["modelParameters"]["approach"]["type"] = "guessing"
    assert any("approach/type" in e for e in cyclonedx_errors(json.dumps(bom)))


def test_installed_packages_with_version_licence_purl_and_hash(cdx):
    components = {c["name"]: c for c in json.loads(cdx)["components"] if c["type"] == "library"}
    assert len(components) == len({normalise(d.metadata["Name"]) for d in md.distributions()})
    crypto = components["cryptography"]
    assert crypto["version"] == md.version("cryptography")
    assert crypto["purl"] == f"pkg:pypi/cryptography@{md.version('cryptography')}"
    record = md.distribution("cryptography").read_text("RECORD")
    assert crypto["hashes"] == [{"alg": "SHA-256", "content": hashlib.sha256(record.encode()).hexdigest()}]
    assert crypto["licenses"] == [{"expression": md.metadata("cryptography")["License-Expression"]}]
    deps = {d["ref"]: d.get("dependsOn", []) for d in json.loads(cdx)["dependencies"]}
    assert "pkg:pypi/cffi@" + md.version("cffi") in deps[crypto["bom-ref"]]


@pytest.mark.skipif(shutil.which("pyspdxtools") is None, reason="spdx-tools' pyspdxtools is not installed")
def test_spdx_validates_with_pyspdxtools(checkpoint, tmp_path):
    out = tmp_path / "SBOM.spdx.json"
    governance.write_spdx(read_card(checkpoint), checkpoint, out)
    done = subprocess.run(["pyspdxtools", "-i", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert governance.spdx_errors(out) == []
    doc = json.loads(out.read_text())
    assert doc["spdxVersion"] == "SPDX-2.3"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", doc["creationInfo"]["created"])
    assert {"spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "DESCRIBES",
            "relatedSpdxElement": "SPDXRef-Model"} in doc["relationships"]
    for entry in doc["files"]:
        data = (checkpoint / entry["fileName"]).read_bytes()
        assert {c["algorithm"]: c["checksumValue"] for c in entry["checksums"]} == {
            "SHA1": hashlib.sha1(data).hexdigest(), "SHA256": hashlib.sha256(data).hexdigest()}


def test_spdx_without_a_describes_relationship_is_refused(checkpoint, tmp_path):
    out = tmp_path / "SBOM.spdx.json"
    governance.write_spdx(read_card(checkpoint), checkpoint, out)
    doc = json.loads(out.read_text())
    doc["relationships"] = [r for r in doc["relationships"] if r["relationshipType"] != "DESCRIBES"]
    doc["creationInfo"]["created"] = "2026-01-01 10:00"  # not ...SSZ
    out.write_text(json.dumps(doc))
    assert governance.spdx_errors(out)
    assert subprocess.run(["pyspdxtools", "-i", str(out)], capture_output=True).returncode != 0
