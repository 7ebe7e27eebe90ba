"""``RECEIPT.json``: what ran, where, on what, from which code, with which seeds, config and data.

A receipt records the machine (OS, CPU, memory, NVIDIA GPUs through ``nvidia-smi`` when it is on the PATH:
no torch, no CUDA import), the Python interpreter and every installed distribution with its version, the git
revision of the code and whether its tracked files were modified, the command line, and the inputs that pin a
run: seeds, the sha256 of the config, the sha256 of each data manifest, and start and end times. Given a
command (``python -m governance receipt ... -- CMD ARGS``) it runs it and records its exit status and the
times around it; otherwise it describes the present call.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from governance.checkpoint import checkpoint_id, read_card
from governance.environment import installed_packages
from governance.files import CONFIG, GovernanceError, read_artifact, write_text
from specs.manifest import hash_file

RECEIPT_FORMAT = "lmplanes-receipt"
REQUIRED = ("format", "version", "started_at", "ended_at", "command", "system", "python", "packages", "git")
CODE_ROOT = Path(__file__).resolve().parents[1]  # the checkout (or site-packages) holding the planes


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def make_receipt(*, command: Sequence[str], started_at: str, ended_at: str, exit_code: int | None = None,
                 seeds: Sequence[int] = (), config: str | Path | None = None,
                 data_manifests: Sequence[str | Path] = (), checkpoint: str | Path | None = None) -> dict[str, Any]:
    """The receipt as a JSON-ready dict. ``checkpoint`` adds its content id, its config's sha256 (unless
    ``config`` is given) and its card's training data hashes."""
    inputs: dict[str, Any] = {"seeds": list(seeds), "config_sha256": None, "data": []}
    if config is not None:
        inputs["config_sha256"] = _sha256(config, "config")
    inputs["data"] = [{"path": str(p), "sha256": _sha256(p, "data manifest")} for p in data_manifests]
    receipt: dict[str, Any] = {
        "format": RECEIPT_FORMAT, "version": 1, "started_at": started_at, "ended_at": ended_at,
        "command": list(command), "exit_code": exit_code, "cwd": os.getcwd(),
        "system": system_info(), "python": python_info(),
        "packages": [{"name": p.name, "version": p.version} for p in installed_packages()],
        "git": git_info(CODE_ROOT), "inputs": inputs,
    }
    if checkpoint is not None:
        card = read_card(checkpoint)
        receipt["checkpoint"] = {"path": str(checkpoint), "content_id": checkpoint_id(checkpoint), "name": card.name}
        if config is None and (Path(checkpoint) / CONFIG).is_file():
            inputs["config_sha256"] = hash_file(Path(checkpoint) / CONFIG)[1]
        inputs["data"] += [{"name": r.name, "uri": r.uri, "sha256": r.sha256} for r in card.training_data]
    return receipt


def run_with_receipt(command: Sequence[str], out: str | Path, **inputs: Any) -> int:
    """Run ``command``, then write its receipt to ``out``; return its exit status."""
    started = now()
    try:
        code = subprocess.call(list(command))
    except OSError as exc:
        raise GovernanceError(f"cannot run {command[0]!r}: {exc.strerror}") from exc
    write_receipt(out, make_receipt(command=command, started_at=started, ended_at=now(), exit_code=code, **inputs))
    return code


def write_receipt(out: str | Path, receipt: dict[str, Any]) -> Path:
    return write_text(out, json.dumps(receipt, indent=2) + "\n")


def receipt_problems(path: Path) -> list[str]:
    """Why ``path`` is not a usable receipt (empty when it is)."""
    data, problems = read_artifact(path, RECEIPT_FORMAT, "receipt")
    if data is None:
        return problems
    missing = [k for k in REQUIRED if k not in data]
    return [f"{path.name}: missing {', '.join(missing)}"] if missing else []


def system_info() -> dict[str, Any]:
    uname = platform.uname()
    pages, page_size = (os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")) if hasattr(os, "sysconf") else (0, 0)
    return {
        "os": platform.platform(), "system": uname.system, "release": uname.release, "machine": uname.machine,
        "cpu": {"model": _cpu_model(), "logical_cores": os.cpu_count()},
        "memory_bytes": pages * page_size or None, "gpus": gpus(),
    }


def gpus() -> list[dict[str, str]]:
    """NVIDIA GPUs as ``nvidia-smi`` lists them; empty when it is not installed or finds none."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    fields = ("name", "driver_version", "memory.total")
    try:
        done = subprocess.run([smi, f"--query-gpu={','.join(fields)}", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    rows = [line.split(", ") for line in done.stdout.splitlines() if line.strip()] if done.returncode == 0 else []
    return [dict(zip(fields, row)) for row in rows]


def python_info() -> dict[str, str]:
    return {"version": platform.python_version(), "implementation": platform.python_implementation(),
            "executable": sys.executable}


def git_info(root: Path) -> dict[str, Any]:
    """``{"revision", "dirty"}`` of the git work tree holding ``root`` (both None outside one, or without git).
    Dirty means a tracked file differs from the revision; untracked files are not counted."""
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    revision = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if revision else None
    return {"revision": revision, "dirty": None if status is None else bool(status)}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _sha256(path: str | Path, what: str) -> str:
    if not Path(path).is_file():
        raise GovernanceError(f"{path}: no such {what} file")
    return hash_file(path)[1]
