"""lmplanes serving: decoding loops over any :class:`specs.CausalLM` (greedy, sampling, beam search), logits
processing in Hugging Face's order, streaming, and speculative decoding with a draft model.

Imports ``specs`` and ``data`` only; the model is anything that satisfies the ``CausalLM`` protocol.
"""

from serve.compiled import CompiledDecoding, compile_decoding
from serve.generate import generate, stream
from serve.processing import process
from serve.speculative import SpeculativeResult, speculative_generate

__all__ = [
    "CompiledDecoding",
    "SpeculativeResult",
    "compile_decoding",
    "generate",
    "process",
    "speculative_generate",
    "stream",
]
