"""The type hints are checked: mypy over every plane and tools/ (configuration in pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tools.planes import PLANES

ROOT = Path(__file__).resolve().parents[1]


def test_mypy_passes() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mypy", *PLANES, "tools", "lmplanes_lm_eval.py"], cwd=ROOT, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, f"mypy found problems:\n{done.stdout}\n{done.stderr}"
