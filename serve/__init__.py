"""lmplanes serving: decoding loops over any :class:`specs.CausalLM` (greedy, sampling, beam search), logits
processing in Hugging Face's order, streaming, speculative decoding with a draft model, and continuous batching
over a paged KV cache (``Engine``; ``AsyncEngine`` serves it as the server's ``Backend``).

Imports ``specs`` and ``data`` only; the model is anything that satisfies the ``CausalLM`` protocol.
"""

from serve.async_engine import AsyncEngine
from serve.backend import Backend, BackendClosed
from serve.engine import Engine, EngineStats
from serve.events import TokenEvent
from serve.generate import generate, stream
from serve.processing import process
from serve.speculative import SpeculativeResult, speculative_generate

__all__ = [
    "AsyncEngine",
    "Backend",
    "BackendClosed",
    "Engine",
    "EngineStats",
    "SpeculativeResult",
    "TokenEvent",
    "generate",
    "process",
    "speculative_generate",
    "stream",
]
