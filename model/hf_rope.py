"""RoPE settings of a Hugging Face ``config.json`` <-> our ``rope`` section, for the families that rotate.

Both dialects are read: transformers 4.x writes ``rope_theta`` and a ``rope_scaling`` mapping at the top level,
5.x nests everything in ``rope_parameters``. As in 5.x, a ``rope_scaling`` mapping takes precedence over
``rope_parameters``, and a ``rope_theta`` inside the mapping over the top-level one. Exports write both.

``rope_type`` -> ours: ``default`` -> ``none``; ``linear``, ``dynamic``, ``llama3``, ``yarn`` keep their names.
What each reads, as ``transformers.modeling_rope_utils`` does:

* ``dynamic`` measures from ``max_position_embeddings`` (transformers ignores an
  ``original_max_position_embeddings`` here), which becomes our ``original_max_seq_len``; our ``max_seq_len``
  (the longest sequence the model accepts) becomes ``factor`` times it, the context the scaling is for.
* ``llama3`` and ``yarn`` take ``original_max_position_embeddings`` (default: ``max_position_embeddings``);
  ``max_seq_len`` is the larger of ``max_position_embeddings`` and ``factor`` times the original context
  (YaRN configs such as Qwen's keep ``max_position_embeddings`` at the original length).
* ``yarn``: a missing ``factor`` is ``max_position_embeddings / original``; ``beta_fast``/``beta_slow``
  default to 32/1; the attention factor is ``attention_factor``, else ``mscale / mscale_all_dim`` through
  ``0.1 ln(factor) + 1`` when both are given, else our default (the same formula with 1). ``truncate: false``
  is refused.

Static NTK (our ``ntk``) has no ``rope_type`` in transformers, so it is not exported.
"""

from __future__ import annotations

import math
from typing import Any

from specs.model_config import RoPEConfig

ROPE_TYPES = ("default", "linear", "dynamic", "llama3", "yarn")
_OURS = {"default": "none"}
_ORIGINAL = "original_max_position_embeddings"


def rope_from_hf(
    hf: dict[str, Any], *, max_positions: int, default_theta: float = 10000.0
) -> tuple[dict[str, Any], int]:
    """``(rope section of our config, max_seq_len)`` for a ``config.json`` whose context is ``max_positions``
    (its ``max_position_embeddings``). Raises ``ValueError`` naming what cannot be honoured."""
    params = hf.get("rope_scaling") or hf.get("rope_parameters") or {}
    if not isinstance(params, dict):
        raise ValueError(f"rope parameters must be a mapping, got {params!r}")
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type not in ROPE_TYPES:
        raise ValueError(f"RoPE type {rope_type!r} is not implemented; supported rope types: {', '.join(ROPE_TYPES)}")
    missing = [key for key in _required(rope_type) if params.get(key) is None]
    if missing:
        raise ValueError(f"{rope_type} RoPE scaling needs {', '.join(repr(k) for k in missing)} in the rope parameters")
    if params.get("partial_rotary_factor", 1.0) != 1.0:
        raise ValueError(f"partial_rotary_factor {params['partial_rotary_factor']} is not supported (only 1.0)")
    theta = float(params.get("rope_theta", hf.get("rope_theta")) or default_theta)
    rope: dict[str, Any] = {"theta": theta, "scaling": _OURS.get(rope_type, rope_type)}
    if rope_type == "default":
        return rope, max_positions
    original = int(params.get(_ORIGINAL) or max_positions)
    factor = float(params.get("factor") or max_positions / original)  # only yarn may leave it out
    rope["factor"] = factor
    if rope_type == "linear":
        return rope, max_positions
    if rope_type == "dynamic":
        rope["original_max_seq_len"] = max_positions
        return rope, int(max_positions * factor)
    rope["original_max_seq_len"] = original
    if rope_type == "llama3":
        rope["low_freq_factor"] = float(params["low_freq_factor"])
        rope["high_freq_factor"] = float(params["high_freq_factor"])
    else:  # yarn
        if params.get("truncate", True) is False:
            raise ValueError("yarn with truncate: false (an unrounded correction range) is not supported")
        rope.update(beta_fast=float(params.get("beta_fast") or 32.0), beta_slow=float(params.get("beta_slow") or 1.0))
        attention = params.get("attention_factor")
        mscale, mscale_all_dim = params.get("mscale"), params.get("mscale_all_dim")
        if attention is None and mscale and mscale_all_dim:
            attention = _mscale(factor, mscale) / _mscale(factor, mscale_all_dim)
        if attention is not None:
            rope["attention_factor"] = float(attention)
    return rope, max(max_positions, int(original * factor))


def rope_to_hf(rope: RoPEConfig, *, max_seq_len: int) -> dict[str, Any]:
    """``config.json`` keys for ``rope``: ``rope_theta`` + ``rope_scaling`` (4.x), ``rope_parameters`` (5.x) and
    ``max_position_embeddings``. ``rope`` has passed :func:`rope_export_problems`."""
    rope_type = "default" if rope.scaling == "none" else rope.scaling
    params: dict[str, Any] = {"rope_type": rope_type, "rope_theta": rope.theta}
    max_positions = max_seq_len
    if rope.scaling != "none":
        params["factor"] = rope.factor
    if rope.scaling == "dynamic":
        assert rope.original_max_seq_len is not None  # RoPEConfig validation
        max_positions = rope.original_max_seq_len
    elif rope.scaling in ("llama3", "yarn"):
        params[_ORIGINAL] = rope.original_max_seq_len
    if rope.scaling == "llama3":
        params.update(low_freq_factor=rope.low_freq_factor, high_freq_factor=rope.high_freq_factor)
    elif rope.scaling == "yarn":
        params.update(beta_fast=rope.beta_fast, beta_slow=rope.beta_slow)
        if rope.attention_factor is not None:
            params["attention_factor"] = rope.attention_factor
    scaling = None if rope.scaling == "none" else {k: v for k, v in params.items() if k != "rope_theta"}
    return {
        "max_position_embeddings": max_positions,
        "rope_theta": rope.theta,
        "rope_scaling": scaling,
        "rope_parameters": params,
    }


def rope_export_problems(rope: RoPEConfig) -> list[str]:
    """What in ``rope`` a transformers config cannot say."""
    if rope.scaling == "ntk":
        return ["rope.scaling is 'ntk' (static NTK), which transformers has no rope_type for; 'dynamic' and 'yarn' it has"]
    return []


def _required(rope_type: str) -> tuple[str, ...]:
    return {
        "linear": ("factor",),
        "dynamic": ("factor",),
        "llama3": ("factor", "low_freq_factor", "high_freq_factor"),
    }.get(rope_type, ())


def _mscale(factor: float, mscale: float) -> float:
    return 0.1 * mscale * math.log(factor) + 1.0 if factor > 1 else 1.0
