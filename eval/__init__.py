"""lmplanes evaluation: sliding-window perplexity, an lm-evaluation-harness model, and a latency/throughput
harness, over any :class:`specs.CausalLM`.

Imports ``specs``, ``data`` and ``serve`` only; the model is anything that satisfies the protocol. See README.md.
"""

from eval.corpora import WIKITEXT2_TEST
from eval.perplexity import PerplexityResult, Window, perplexity, sliding_windows
from eval.scoring import Scored, score_last_tokens

__all__ = [
    "WIKITEXT2_TEST",
    "PerplexityResult",
    "Scored",
    "Window",
    "perplexity",
    "score_last_tokens",
    "sliding_windows",
]
