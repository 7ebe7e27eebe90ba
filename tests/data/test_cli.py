"""``python -m data``: the same commands as ``lmplanes data``, with one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from data.cli import unescape

ROOT = Path(__file__).resolve().parents[2]


def run_data(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-m", "data", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


def test_python_m_data_builds_and_reports_errors_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("Hello, world.\n")
    done = run_data("build", "--input", "a.txt", "--outdir", "out", "--tokenizer", "byte", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "wrote out: train 13 tokens" in done.stdout and (tmp_path / "out" / "manifest.json").is_file()
    again = run_data("build", "--input", "a.txt", "--outdir", "out", "--tokenizer", "byte", cwd=tmp_path)
    assert again.returncode == 1 and "Traceback" not in again.stderr
    assert again.stderr.strip().splitlines()[-1] == (
        "python -m data: error: out is not empty; pass --overwrite to replace a previous build there"
    )


def test_separators_are_written_with_backslash_escapes() -> None:
    assert unescape(r"\n\n") == "\n\n" and unescape(r"a\tb\\n") == "a\tb\\n" and unescape("<|endoftext|>") == "<|endoftext|>"


def test_building_shards_does_not_load_torch(tmp_path: Path) -> None:
    """Only the datasets need torch; the CLI and the build start without it."""
    code = (
        "import sys, data; from data.cli import main; "
        "rc = main(['build', '--input', 'a.txt', '--outdir', 'o', '--tokenizer', 'char']); "
        "assert 'torch' not in sys.modules, 'torch was imported'; sys.exit(rc)"
    )
    (tmp_path / "a.txt").write_text("abc")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
