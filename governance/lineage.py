"""``LINEAGE.dot``: where a checkpoint came from and what was made of it, as a graphviz digraph.

Nodes are keyed by content: a data set by the sha256 of its build manifest (its token shards, read from a
``data`` build directory's ``manifest.json`` when one is given, by theirs), a checkpoint by its manifest's
content id, so that graphs of related releases name the same node the same way. Edges run
data shards -> data set -> training run -> checkpoint -> exports, and parent checkpoints -> run (the card's
``parents``: the checkpoint was trained from them). The run is the training run directory holding the
checkpoint (``RUN/checkpoints/NAME`` with ``RUN/train_config.yaml``) when there is one.

``dot`` renders an empty graph without complaint, so :func:`lineage_problems` checks the content: the
checkpoint node and every data set of its card must be there.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from governance.checkpoint import checkpoint_id, read_card
from governance.files import GovernanceError, write_bytes, write_text
from specs.card import ModelCard
from specs.manifest import hash_file

SHARDS_FORMAT = "lmplanes-token-shards"  # the data plane's build manifest (read as JSON: no data import)
RUN_CONFIG = "train_config.yaml"


def checkpoint_node(directory: Path, card: ModelCard) -> str:
    return f"checkpoint:{checkpoint_id(directory) or card.name + '@' + card.model_version}"


def build_lineage(checkpoint: str | Path, *, exports: Sequence[str | Path] = (),
                  data_dirs: Sequence[str | Path] = ()) -> str:
    """The DOT text of ``checkpoint``'s lineage, with ``exports`` (directories with a model card) made from it
    and ``data_dirs`` (``data`` builds) whose shards fed it."""
    root = Path(checkpoint)
    card = read_card(root)
    graph = _Graph()
    ckpt = checkpoint_node(root, card)
    graph.node(ckpt, f"checkpoint {card.name} {card.model_version}\n{ckpt.split(':', 1)[1]}", "box3d")
    run_dir = root.parent.parent if (root.parent.parent / RUN_CONFIG).is_file() else None
    run = f"run:{hash_file(run_dir / RUN_CONFIG)[1] if run_dir else ckpt}"
    steps = card.metrics.get("step")
    label = [f"training run {run_dir.name}" if run_dir else "training run",
             f"code {card.code_revision or 'revision unknown'}"] + ([f"{int(steps)} steps"] if steps else [])
    graph.node(run, "\n".join(label), "box")
    graph.edge(run, ckpt)
    datasets = {}
    for ref in card.training_data:
        node = f"data:{ref.sha256}"
        datasets[ref.sha256] = node
        graph.node(node, f"data {ref.name}\n{ref.uri}\nsha256 {ref.sha256[:16]}", "cylinder")
        graph.edge(node, run)
    for directory in data_dirs:
        manifest_path = Path(directory) / "manifest.json"
        shards = _shards(manifest_path)
        digest = hash_file(manifest_path)[1]
        node = datasets.get(digest, f"data:{digest}")
        if digest not in datasets:
            graph.node(node, f"data {Path(directory).name}\nsha256 {digest[:16]}", "cylinder")
            graph.edge(node, run)
        for name, sha in shards:
            graph.node(f"shard:{sha}", f"{name}\nsha256 {sha[:16]}", "note")
            graph.edge(f"shard:{sha}", node)
    for parent in card.parents:
        graph.node(f"checkpoint:{parent}", f"parent checkpoint\n{parent}", "box3d")
        graph.edge(f"checkpoint:{parent}", run)
    for export in exports:
        export_card = read_card(export)
        node = f"export:{checkpoint_id(export) or Path(export).name}"
        graph.node(node, f"export {Path(export).name}\n{export_card.architecture}", "component")
        graph.edge(ckpt, node)
    return graph.text()


def write_lineage(checkpoint: str | Path, out: str | Path, *, png: bool = False, **sources: Sequence[str | Path]) -> Path:
    """Write the DOT file (and, with ``png``, ``out`` with ``.png`` rendered by graphviz) and return its path."""
    text = build_lineage(checkpoint, **sources)
    path = write_text(out, text)
    if png:
        dot = shutil.which("dot")
        if dot is None:
            raise GovernanceError("--png needs graphviz's 'dot' on the PATH (apt install graphviz)")
        done = subprocess.run([dot, "-Tpng"], input=text.encode("utf-8"), capture_output=True, timeout=120)
        if done.returncode != 0:
            raise GovernanceError(f"dot could not render {path}: {done.stderr.decode(errors='replace').strip()}")
        write_bytes(path.with_suffix(".png"), done.stdout)
    return path


def lineage_problems(path: Path, checkpoint: Path, card: ModelCard) -> list[str]:
    """What the lineage file misses about ``checkpoint`` (empty when it names the checkpoint and its data)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return [f"{path.name}: missing"]
    except UnicodeDecodeError:
        return [f"{path.name}: not UTF-8 text"]
    if not text.lstrip().startswith("digraph"):
        return [f"{path.name}: not a graphviz digraph"]
    wanted = [checkpoint_node(checkpoint, card)] + [f"data:{r.sha256}" for r in card.training_data]
    return [f"{path.name}: no node {node!r} (the lineage does not describe this checkpoint)"
            for node in wanted if _quote(node) not in text]


def _shards(manifest_path: Path) -> list[tuple[str, str]]:
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GovernanceError(f"{manifest_path}: not a readable data build manifest ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != SHARDS_FORMAT:
        raise GovernanceError(f"{manifest_path}: not a token-shard build manifest (format {SHARDS_FORMAT!r})")
    try:
        return [(s["path"], s["sha256"]) for split in manifest["splits"].values() for s in split["shards"]]
    except (KeyError, TypeError, AttributeError) as exc:
        raise GovernanceError(f"{manifest_path}: malformed token-shard build manifest (no splits/shards: {exc!r})") from exc


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


class _Graph:
    def __init__(self) -> None:
        self.nodes: dict[str, str] = {}
        self.edges: list[tuple[str, str]] = []

    def node(self, key: str, label: str, shape: str) -> None:
        self.nodes.setdefault(key, f"  {_quote(key)} [label={_quote(label)}, shape={shape}];")

    def edge(self, a: str, b: str) -> None:
        if (a, b) not in self.edges:
            self.edges.append((a, b))

    def text(self) -> str:
        lines = ["digraph lineage {", "  rankdir=LR;", '  node [fontname="Helvetica"];', *self.nodes.values()]
        lines += [f"  {_quote(a)} -> {_quote(b)};" for a, b in self.edges]
        return "\n".join([*lines, "}"]) + "\n"
