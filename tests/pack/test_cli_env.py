"""``lmplanes env``: one ``key: value`` line per fact, never a traceback when a plane is missing."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pack.cli import main

ROOT = Path(__file__).resolve().parents[2]
KEYS = ["lmplanes", "python", "platform", "torch", "cuda", "triton", "safetensors", "pydantic", "numpy", "kernels"]


def env_facts(capsys: pytest.CaptureFixture[str]) -> dict[str, str]:
    assert main(["env"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    facts = {}
    for line in captured.out.splitlines():
        key, sep, value = line.partition(":")
        assert sep, line
        facts[key] = value.strip()
    return facts


def test_env_reports_every_fact_in_order(capsys: pytest.CaptureFixture[str]) -> None:
    facts = env_facts(capsys)
    assert list(facts) == KEYS
    assert facts["torch"] == torch.__version__
    assert facts["python"].startswith(platform.python_version())
    assert facts["safetensors"] == importlib.metadata.version("safetensors")
    assert facts["pydantic"] == importlib.metadata.version("pydantic")
    try:
        assert facts["triton"] == importlib.metadata.version("triton")
    except importlib.metadata.PackageNotFoundError:
        assert facts["triton"] == "not installed"
    assert facts["cuda"].startswith("available" if torch.cuda.is_available() else "not available")


def test_env_lists_registered_kernels(capsys: pytest.CaptureFixture[str]) -> None:
    import kernel

    kernels = env_facts(capsys)["kernels"].split(", ")
    assert kernels == kernel.available()
    assert {"manual", "sdpa"} <= set(kernels)


def test_env_survives_a_missing_kernel_plane(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "kernel", None)  # makes `import kernel` raise ImportError
    assert env_facts(capsys)["kernels"].startswith("unavailable (")


def test_env_names_cuda_devices(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: f"Fake GPU {i}")
    cuda = env_facts(capsys)["cuda"]
    assert cuda.startswith("available") and "0: Fake GPU 0; 1: Fake GPU 1" in cuda


def test_python_m_pack_env(tmp_path: Path) -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-m", "pack", "env"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert [line.partition(":")[0] for line in done.stdout.splitlines()] == KEYS
