"""``pack.huge_pages``: the decoding commands ask PyTorch for huge pages before torch is imported."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

THP_MODE = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def _python(code: str, **env: str) -> str:
    environment = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"} | env
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def _after_command(args: list[str], **env: str) -> str:
    """THP_MEM_ALLOC_ENABLE once ``lmplanes ARGS`` has run (its outcome does not matter here)."""
    return _python(f"import os, pack.cli; pack.cli.main({args!r}); print(os.environ.get('THP_MEM_ALLOC_ENABLE'))",
                   **env)


def test_decoding_commands_turn_huge_pages_on_and_others_leave_them_alone(tmp_path):
    missing = str(tmp_path / "no-such-checkpoint")
    assert _after_command(["generate", "--checkpoint", missing, "--prompt", "x"]) == "1"
    assert _after_command(["chat", "--checkpoint", missing]) == "1"
    assert _after_command(["serve", "--checkpoint", missing]) == "1"
    assert _after_command(["config", "new", "llama-tiny", "-o", str(tmp_path / "c.yaml")]) == "None"


def test_a_setting_the_user_made_is_kept(tmp_path):
    assert _after_command(["generate", "--checkpoint", str(tmp_path), "--prompt", "x"], THP_MEM_ALLOC_ENABLE="0") == "0"


def test_too_late_once_torch_is_imported():
    assert _python("import torch, pack.huge_pages as h; print(h.enable())") == "False"
    assert _python("import pack.huge_pages as h; print(h.enable())") == "True"


@pytest.mark.skipif(not THP_MODE.exists() or "[never]" in THP_MODE.read_text(), reason="the kernel has THP off")
def test_large_tensors_then_sit_on_huge_pages():
    code = (
        "import pack.huge_pages as h; h.enable(); import torch; w = torch.ones(8 << 20); "
        "print(sum(int(l.split()[1]) for l in open('/proc/self/smaps') if l.startswith('AnonHugePages')))"
    )
    assert int(_python(code)) >= 2048  # kB: at least one 2 MiB page under the 32 MiB tensor
