"""Families that read ``config.json`` as Llama does and then change a few things (Qwen 2/3, Gemma 2/3).

They name their sizes, heads, RoPE parameters, norms' epsilon and attention projections as Llama does, so each
reads ``config.json`` through :class:`LlamaFamily` (RoPE dialects and scalings included) and then sets what it
changes; their export checks start from Llama's.
"""

from __future__ import annotations

from typing import Any

from model.hf_llama import LlamaFamily
from specs.config_io import to_dict
from specs.model_config import ModelConfig


def read_as_llama(values: dict[str, Any], *, label: str, name: str, dtype: str) -> dict[str, Any]:
    """Our config (as plain data, to be adjusted) for the Llama keys of ``values``; the Llama mapping's
    errors are re-worded to name the family ``label``."""
    try:
        return to_dict(LlamaFamily().config_from_hf(values, name=name, dtype=dtype))
    except ValueError as exc:
        raise ValueError(str(exc).replace("Llama", label)) from None


def llama_problems(llama_view: ModelConfig, *, label: str) -> list[str]:
    """Llama's export problems for ``llama_view`` (a config with the family's own features taken away),
    re-worded to name the family."""
    return [problem.replace("Llama", label) for problem in LlamaFamily().export_problems(llama_view)]
