"""lmplanes evaluation: sliding-window perplexity, an lm-evaluation-harness model, and a latency/throughput
harness, over any :class:`specs.CausalLM`.

Imports ``specs``, ``data`` and ``serve`` only; the model is anything that satisfies the protocol. Names that
need torch load it on first use (so ``lmplanes`` builds its parser without torch), and the lm-evaluation-harness
names load ``lm_eval`` (the ``eval`` extra). See README.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from eval.corpora import WIKITEXT2_TEST
from eval.harness_tasks import TASKS, write_tasks
from eval.perf_report import Measured, PerfReport, summarize

if TYPE_CHECKING:
    from eval.harness import LMPlanesLM, register_with_lm_eval, run_lm_eval
    from eval.perf import measure_bandwidth, measure_peak_flops, run_perf
    from eval.perplexity import PerplexityResult, Window, perplexity, sliding_windows
    from eval.scoring import Scored, score_last_tokens

# Public names loaded on first use, and the module each comes from.
_LAZY = {
    "LMPlanesLM": "eval.harness",
    "register_with_lm_eval": "eval.harness",
    "run_lm_eval": "eval.harness",
    "measure_bandwidth": "eval.perf",
    "measure_peak_flops": "eval.perf",
    "run_perf": "eval.perf",
    "PerplexityResult": "eval.perplexity",
    "Window": "eval.perplexity",
    "perplexity": "eval.perplexity",
    "sliding_windows": "eval.perplexity",
    "Scored": "eval.scoring",
    "score_last_tokens": "eval.scoring",
}

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
    if name not in _LAZY:
        raise AttributeError(f"module 'eval' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
