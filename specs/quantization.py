"""``quantization.json``: the marker of a checkpoint whose linear weights are stored as int8.

``export`` writes int8 checkpoints (it may not import ``model``) and ``model.load_checkpoint`` reads them, so
the file's name and shape are a contract and live here. A checkpoint without the file is a float one.

Format::

    {"format": "lmplanes-int8", "version": 1, "scheme": "weight-only int8, symmetric, one scale per output row",
     "compute_dtype": "bfloat16", "quantized": ["layers.0.attn.wq", ...], "kept": {"name": "why it stays float"}}

Each quantized linear ``NAME`` stores ``NAME.weight_int8`` (int8, ``(out, in)``) and ``NAME.scales``
(``compute_dtype``, ``(out,)``), with ``weight ~= weight_int8 * scales[:, None]``; everything else is stored in
``compute_dtype`` under its usual name.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from specs.errors import CheckpointError

QUANTIZATION_NAME = "quantization.json"
QUANTIZATION_FORMAT = "lmplanes-int8"
QUANTIZATION_VERSION = 1
COMPUTE_DTYPES = ("bfloat16", "float16", "float32")


def read_quantization(directory: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The checkpoint's quantization marker, checked; None for a float checkpoint (no marker)."""
    path = Path(directory) / QUANTIZATION_NAME
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{QUANTIZATION_NAME}: malformed, not valid JSON ({exc})", directory) from None
    problems = []
    if not isinstance(data, dict) or data.get("format") != QUANTIZATION_FORMAT:
        problems.append(f"{QUANTIZATION_NAME}: format is not {QUANTIZATION_FORMAT!r}")
    elif data.get("version") != QUANTIZATION_VERSION:
        problems.append(f"{QUANTIZATION_NAME}: unsupported version {data.get('version')!r} (this lmplanes reads 1)")
    elif data.get("compute_dtype") not in COMPUTE_DTYPES:
        problems.append(f"{QUANTIZATION_NAME}: compute_dtype {data.get('compute_dtype')!r} is not one of {COMPUTE_DTYPES}")
    if problems:
        raise CheckpointError(problems, directory)
    return data
