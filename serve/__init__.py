"""lmplanes serving: decoding loops over any :class:`specs.CausalLM` (greedy, sampling, beam search) and any
:class:`specs.Seq2SeqLM` (greedy, sampling: ``generate_seq2seq``), logits
processing in Hugging Face's order, streaming, speculative decoding with a draft model, continuous batching
over a paged KV cache (``Engine``; ``AsyncEngine`` serves it as a ``Backend``), and an OpenAI-compatible HTTP
server over a pluggable generation backend.

Imports ``specs`` and ``data`` only; the model is anything that satisfies the ``CausalLM`` protocol.
"""

from serve.app import create_app
from serve.async_engine import AsyncEngine
from serve.backend import Backend, BackendClosed
from serve.chat_template import ChatTemplate, ChatTemplateError
from serve.compiled import CompiledDecoding, compile_decoding
from serve.compute_thread import hand_threads_to_workers
from serve.embeddings import ServedEmbedder
from serve.engine import Engine, EngineStats
from serve.events import TokenEvent
from serve.generate import generate, stream
from serve.processing import process
from serve.sampling import sampling_config
from serve.seq2seq import generate_seq2seq
from serve.serial_backend import SerialBackend
from serve.served_model import ServedModel
from serve.server import run_server
from serve.settings import ServerSettings
from serve.speculative import SpeculativeResult, speculative_generate
from serve.text_generation import TextDelta, generate_text

__all__ = [
    "AsyncEngine",
    "Backend",
    "BackendClosed",
    "ChatTemplate",
    "ChatTemplateError",
    "CompiledDecoding",
    "Engine",
    "EngineStats",
    "SerialBackend",
    "ServedEmbedder",
    "ServedModel",
    "ServerSettings",
    "SpeculativeResult",
    "TextDelta",
    "TokenEvent",
    "compile_decoding",
    "create_app",
    "generate",
    "generate_seq2seq",
    "generate_text",
    "hand_threads_to_workers",
    "process",
    "run_server",
    "sampling_config",
    "speculative_generate",
    "stream",
]
