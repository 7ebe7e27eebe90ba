"""lmplanes serving: decoding loops over any :class:`specs.CausalLM` (greedy, sampling, beam search), logits
processing in Hugging Face's order, streaming, speculative decoding with a draft model, and continuous batching
over a paged KV cache (``Engine``).

Imports ``specs`` and ``data`` only; the model is anything that satisfies the ``CausalLM`` protocol.
"""

from serve.engine import Engine, EngineStats
from serve.events import TokenEvent
from serve.generate import generate, stream
from serve.processing import process
from serve.speculative import SpeculativeResult, speculative_generate

__all__ = [
    "Engine",
    "EngineStats",
    "SpeculativeResult",
    "TokenEvent",
    "generate",
    "process",
    "speculative_generate",
    "stream",
]
