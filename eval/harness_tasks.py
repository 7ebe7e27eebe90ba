"""The lm-evaluation-harness tasks lmplanes ships: their data in ``eval/tasks/*.jsonl``, their YAML written on
demand.

lm_eval reads a local task as ``dataset_path: json`` with ``data_files``, which ``datasets`` resolves against
the working directory, not the YAML's folder; so the YAMLs are written with the absolute paths of the packaged
data wherever lmplanes is installed (``python -m eval tasks DIR``, then ``--include_path DIR``).

- ``lmplanes_mc``: 32 multiple-choice questions of general knowledge (four choices each), ``acc`` and
  ``acc_norm``.
- ``lmplanes_rolling``: 30 short English sentences scored whole (``loglikelihood_rolling``): word and byte
  perplexity, bits per byte.

Both were written for lmplanes (no source to credit; same licence as the code).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

TASK_DATA = Path(__file__).resolve().parent / "tasks"

_TASKS = {
    "lmplanes_mc": {
        "output_type": "multiple_choice",
        "doc_to_text": "Question: {{question}}\nAnswer:",
        "doc_to_choice": "{{choices}}",
        "doc_to_target": "{{answer}}",
        "metric_list": [{"metric": "acc"}, {"metric": "acc_norm"}],
    },
    "lmplanes_rolling": {
        "output_type": "loglikelihood_rolling",
        "doc_to_text": "",
        "doc_to_target": "{{text}}",
        "metric_list": [{"metric": "word_perplexity"}, {"metric": "byte_perplexity"}, {"metric": "bits_per_byte"}],
    },
}
TASKS = tuple(_TASKS)


def write_tasks(folder: str | os.PathLike[str]) -> list[Path]:
    """Write one ``NAME.yaml`` per shipped task into ``folder`` (created if missing); return their paths."""
    target = Path(folder)
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for name, settings in _TASKS.items():
        task = {
            "task": name,
            "dataset_path": "json",
            "dataset_kwargs": {"data_files": {"test": str(TASK_DATA / f"{name}.jsonl")}},
            "test_split": "test",
            **settings,
            "metadata": {"version": 1.0},
        }
        path = target / f"{name}.yaml"
        path.write_text(json.dumps(task, indent=2) + "\n", encoding="utf-8")  # JSON is YAML
        written.append(path)
    return written
