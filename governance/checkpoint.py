"""Read a checkpoint (or export) directory as files: its ``modelcard.json``, and whether the card still matches.

Nothing here imports ``model`` or torch: the card is parsed by ``specs`` and the files are hashed
(``specs.manifest``), so this runs on any machine that holds the directory.
"""

from __future__ import annotations

import json
from pathlib import Path

from governance.files import CONFIG, MANIFEST, MODELCARD, GovernanceError
from specs.card import ModelCard
from specs.config_files import load_config
from specs.errors import ConfigError
from specs.manifest import hash_file, verify_manifest


def read_card(directory: str | Path) -> ModelCard:
    """The :class:`specs.ModelCard` of ``directory``; a :class:`GovernanceError` naming the problem if unusable."""
    root = Path(directory)
    if not root.is_dir():
        raise GovernanceError(f"{root}: not a directory (expected a checkpoint or export directory)")
    path = root / MODELCARD
    if not path.is_file():
        raise GovernanceError(f"{path}: missing; governance describes directories that carry a model card")
    try:
        card = load_config(path, kind="modelcard")
    except ConfigError as exc:
        reasons = "; ".join(line.strip() for line in str(exc).splitlines()[1:]) or str(exc)  # one line
        raise GovernanceError(f"{path}: not a valid model card: {reasons}") from exc
    assert isinstance(card, ModelCard)
    return card


def card_problems(directory: str | Path, card: ModelCard) -> list[str]:
    """Where the card and the directory disagree, one line each: every file the card lists must be there with
    the card's size and sha256, ``config.json`` must hold the card's config, and a ``MANIFEST.json`` (when the
    directory has one) must still hold."""
    root = Path(directory)
    problems = []
    for ref in card.files:
        path = root / ref.path
        if not path.is_file():
            problems.append(f"{ref.path}: listed in {MODELCARD} but missing")
            continue
        size, sha = hash_file(path)
        if (size, sha) != (ref.size, ref.sha256):
            problems.append(f"{ref.path}: sha256 {sha} ({size} bytes) does not match {MODELCARD} "
                            f"({ref.sha256}, {ref.size} bytes)")
    config = root / CONFIG
    if config.is_file():
        try:
            stored = json.loads(config.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            problems.append(f"{CONFIG}: not valid JSON ({exc})")
        else:
            if stored != card.config:
                problems.append(f"{CONFIG}: does not match the config in {MODELCARD}")
    if (root / MANIFEST).is_file():
        problems += verify_manifest(root)
    return problems


def checkpoint_id(directory: str | Path) -> str | None:
    """The content id of the directory's ``MANIFEST.json`` (what model cards name parents by), if it has one."""
    try:
        data = json.loads((Path(directory) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    cid = data.get("content_id") if isinstance(data, dict) else None
    return cid if isinstance(cid, str) else None
