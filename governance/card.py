"""``MODEL_CARD.md`` + ``MODEL_CARD.json``: the checkpoint's ``modelcard.json`` made readable and joined with
metrics from elsewhere (an evaluation's JSON), the SBOM and the receipt.

``MODEL_CARD.json`` keeps the checkpoint's card verbatim (``card``) beside the checkpoint's content id, so
:func:`card_mismatch` can tell that a release's card still describes the checkpoint next to it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from governance.checkpoint import checkpoint_id, read_card
from governance.files import CARD_JSON, CARD_MD, MODELCARD, GovernanceError, read_artifact, write_text
from specs.card import ModelCard
from specs.config_io import to_dict

CARD_FORMAT = "lmplanes-release-card"


def build_card(checkpoint: str | Path, *, metrics: str | Path | None = None, sbom: str | Path | None = None,
               receipt: str | Path | None = None) -> tuple[dict[str, Any], str]:
    """``(MODEL_CARD.json as a dict, MODEL_CARD.md text)`` for ``checkpoint``."""
    card = read_card(checkpoint)
    merged = {**card.metrics, **(_metrics(Path(metrics)) if metrics else {})}
    document: dict[str, Any] = {
        "format": CARD_FORMAT, "version": 1, "content_id": checkpoint_id(checkpoint), "card": to_dict(card),
        "metrics": merged, "sbom": _sbom_summary(Path(sbom)) if sbom else None,
        "receipt": _receipt_summary(Path(receipt)) if receipt else None,
    }
    return document, _markdown(card, document)


def write_card(checkpoint: str | Path, out_dir: str | Path, **sources: str | Path | None) -> tuple[Path, Path]:
    document, markdown = build_card(checkpoint, **sources)
    out = Path(out_dir)
    return (write_text(out / CARD_JSON, json.dumps(document, indent=2) + "\n"), write_text(out / CARD_MD, markdown))


def card_mismatch(card_json: Path, checkpoint: Path, card: ModelCard) -> list[str]:
    """Where the release card disagrees with the checkpoint's own card (empty when it describes it)."""
    document, problems = read_artifact(card_json, CARD_FORMAT, "release card")
    if document is None:
        return problems
    if document.get("card") != to_dict(card):
        problems.append(f"{card_json.name}: card/checkpoint mismatch: its card differs from {MODELCARD}")
    if document.get("content_id") != checkpoint_id(checkpoint):
        problems.append(f"{card_json.name}: card/checkpoint mismatch: content id {document.get('content_id')} is not "
                        f"the checkpoint's ({checkpoint_id(checkpoint)})")
    return problems


def _metrics(path: Path) -> dict[str, float]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GovernanceError(f"{path}: not a readable metrics JSON file ({exc})") from exc
    if not isinstance(data, dict) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in data.values()
    ):
        raise GovernanceError(f"{path}: metrics must be a JSON object of names to finite numbers")
    return {str(k): float(v) for k, v in data.items()}


def _sbom_summary(path: Path) -> dict[str, Any]:
    bom = _load(path, "SBOM")
    components = bom.get("components", [])
    return {"file": path.name, "format": f"CycloneDX {bom.get('specVersion')}", "components": len(components),
            "serialNumber": bom.get("serialNumber")}


def _receipt_summary(path: Path) -> dict[str, Any]:
    receipt = _load(path, "receipt")
    system = receipt.get("system", {})
    return {"file": path.name, "os": system.get("os"), "cpu": system.get("cpu", {}).get("model"),
            "gpus": [g.get("name") for g in system.get("gpus", [])], "python": receipt.get("python", {}).get("version"),
            "git": receipt.get("git"), "packages": len(receipt.get("packages", [])),
            "started_at": receipt.get("started_at"), "ended_at": receipt.get("ended_at")}


def _load(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GovernanceError(f"{path}: not a readable {what} ({exc})") from exc
    if not isinstance(data, dict):
        raise GovernanceError(f"{path}: not a {what} (expected a JSON object)")
    return data


def _markdown(card: ModelCard, document: dict[str, Any]) -> str:
    lines = [f"# {card.name} {card.model_version}", "",
             f"A {card.architecture} language model with {card.parameters:,} parameters ({card.dtype}).", "",
             "| field | value |", "| --- | --- |",
             f"| content id | `{document['content_id']}` |", f"| license | {card.license} |",
             f"| intended use | {card.intended_use} |", f"| tokenizer | {card.tokenizer or '-'} |",
             f"| code revision | {card.code_revision or '-'} |", f"| created | {card.created_at} |", ""]
    if card.limitations:
        lines += ["## Limitations", "", card.limitations, ""]
    if document["metrics"]:
        lines += ["## Metrics", "", "| metric | value |", "| --- | --- |"]
        lines += [f"| {k} | {v:.6g} |" for k, v in sorted(document["metrics"].items())] + [""]
    if card.training_data:
        lines += ["## Training data", "", "| name | uri | sha256 |", "| --- | --- | --- |"]
        lines += [f"| {r.name} | {r.uri} | `{r.sha256}` |" for r in card.training_data] + [""]
    if card.parents:
        lines += ["## Parent checkpoints", "", *[f"- `{p}`" for p in card.parents], ""]
    lines += ["## Files", "", "| file | bytes | sha256 |", "| --- | --- | --- |"]
    lines += [f"| {f.path} | {f.size:,} | `{f.sha256}` |" for f in card.files] + [""]
    if sbom := document["sbom"]:
        lines += ["## Software bill of materials", "",
                  f"{sbom['file']}: {sbom['format']}, {sbom['components']} components.", ""]
    if receipt := document["receipt"]:
        git = receipt["git"] or {}
        dirty = " (modified)" if git.get("dirty") else ""
        lines += ["## Receipt", "", f"- system: {receipt['os']}, CPU {receipt['cpu']}, "
                  f"GPUs: {', '.join(receipt['gpus']) or 'none'}",
                  f"- Python {receipt['python']}, {receipt['packages']} packages",
                  f"- code: {git.get('revision') or 'not a git checkout'}{dirty}",
                  f"- from {receipt['started_at']} to {receipt['ended_at']}", ""]
    lines += ["## Configuration", "", "```json", json.dumps(card.config, indent=2), "```", ""]
    return "\n".join(lines)
