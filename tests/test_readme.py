"""The README's Python snippet runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_api_snippet() -> str:
    text = README.read_text(encoding="utf-8")
    match = re.search(r"^## Python API\n.*?^```python\n(.*?)^```", text, re.S | re.M)
    assert match, "README.md has no '## Python API' section with a python code block"
    return match.group(1)


def test_the_python_api_snippet_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)  # it writes ckpt/ and hf_out/ where it runs
    namespace: dict[str, object] = {}
    exec(compile(python_api_snippet(), "README.md (Python API)", "exec"), namespace)
    assert capsys.readouterr().out.strip() == "['lacks softcap']"
    assert (tmp_path / "ckpt" / "MANIFEST.json").is_file() and (tmp_path / "hf_out" / "config.json").is_file()
    logits = namespace["logits"]
    assert logits.shape == (1, 1, 256)  # type: ignore[attr-defined]
