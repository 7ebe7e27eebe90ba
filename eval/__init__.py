"""lmplanes evaluation: sliding-window perplexity, an lm-evaluation-harness model, and a latency/throughput
harness, over any :class:`specs.CausalLM`.

Imports ``specs``, ``data`` and ``serve`` only; the model is anything that satisfies the protocol. The
lm-evaluation-harness names load ``lm_eval`` (the ``eval`` extra) on first use. See README.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from eval.corpora import WIKITEXT2_TEST
from eval.harness_tasks import TASKS, write_tasks
from eval.perf import measure_bandwidth, measure_peak_flops, run_perf
from eval.perf_report import Measured, PerfReport, summarize
from eval.perplexity import PerplexityResult, Window, perplexity, sliding_windows
from eval.scoring import Scored, score_last_tokens

if TYPE_CHECKING:
    from eval.harness import LMPlanesLM, register_with_lm_eval, run_lm_eval

# Public names that need lm_eval (an optional dependency), and the module each comes from.
_NEEDS_LM_EVAL = {"LMPlanesLM": "eval.harness", "register_with_lm_eval": "eval.harness", "run_lm_eval": "eval.harness"}

__all__ = [
    "TASKS",
    "WIKITEXT2_TEST",
    "LMPlanesLM",
    "Measured",
    "PerfReport",
    "PerplexityResult",
    "Scored",
    "Window",
    "measure_bandwidth",
    "measure_peak_flops",
    "perplexity",
    "register_with_lm_eval",
    "run_lm_eval",
    "run_perf",
    "score_last_tokens",
    "sliding_windows",
    "summarize",
    "write_tasks",
]


def __getattr__(name: str) -> Any:
    if name not in _NEEDS_LM_EVAL:
        raise AttributeError(f"module 'eval' has no attribute {name!r}")
    value = getattr(importlib.import_module(_NEEDS_LM_EVAL[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
