"""What the Hugging Face families beyond Llama share: reading the keys they have in common with Llama through
the Llama mapping, and per-layer attention types (``layer_types``) both ways.

Qwen 2/3 and Gemma 2/3 name their sizes, heads, RoPE parameters, norms' epsilon and attention projections as
Llama does, so each of those families reads ``config.json`` through :class:`LlamaFamily` (RoPE dialects and
scalings included) and then sets what it changes. ``layer_types`` lists ``"sliding_attention"`` or
``"full_attention"`` per layer; our config says the same with ``attention.window`` and
``attention.global_every`` (:meth:`specs.AttentionConfig.layer_window`), which covers every layer pattern
where the global layers are each ``global_every``-th (Gemma 2: 2, Gemma 3: 6), all layers or none.
"""

from __future__ import annotations

import re
from typing import Any

from model.hf_llama import LlamaFamily
from specs.config_io import to_dict
from specs.model_config import ModelConfig

SLIDING, FULL = "sliding_attention", "full_attention"
LAYER_NAME = re.compile(r"layers\.(\d+)\.(.+)")  # our per-layer tensor names: index, name inside the layer


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


def layer_types(cfg: ModelConfig) -> list[str]:
    """``layer_types`` for ``config.json``: each layer's attention as our config has it."""
    return [SLIDING if cfg.attention.layer_window(i) is not None else FULL for i in range(cfg.n_layers)]


def window_section(types: list[Any], window: Any, *, n_layers: int, max_seq_len: int) -> dict[str, Any]:
    """``attention.window`` / ``attention.global_every`` for the per-layer ``types`` and the checkpoint's
    ``sliding_window``; a pattern our rule cannot express raises ``ValueError`` naming it. A window that spans
    ``max_seq_len`` keys hides nothing, so such layers are global."""
    if len(types) != n_layers or not set(types) <= {SLIDING, FULL}:
        raise ValueError(f"layer_types must list {n_layers} of {SLIDING!r}/{FULL!r}, got {types!r}")
    sliding = [kind == SLIDING for kind in types]
    if not any(sliding):
        return {"window": None, "global_every": None}
    if not isinstance(window, int) or isinstance(window, bool) or window < 1:
        raise ValueError(f"sliding_window must be a positive integer for the sliding layers, got {window!r}")
    if window >= max_seq_len:
        return {"window": None, "global_every": None}
    if all(sliding):
        return {"window": window, "global_every": None}
    for every in range(2, n_layers + 1):
        if sliding == [(i + 1) % every != 0 for i in range(n_layers)]:
            return {"window": window, "global_every": every}
    pattern = "".join("S" if s else "G" for s in sliding)
    raise ValueError(
        f"layer_types pattern {pattern} (S: sliding, G: global) is not supported; only all, none, or every "
        "k-th layer global (k = 2 for Gemma 2, 6 for Gemma 3)"
    )
