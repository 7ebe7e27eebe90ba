"""lmplanes serving: decoding loops over any :class:`specs.CausalLM` (greedy, sampling, beam search), logits
processing in Hugging Face's order, and streaming.

Imports ``specs`` and ``data`` only; the model is anything that satisfies the ``CausalLM`` protocol.
"""

from serve.generate import generate, stream
from serve.processing import process

__all__ = ["generate", "process", "stream"]
