"""Model assemblers (decoder-only LM, encoder-only BERT style, encoder-decoder T5/BART style), pooling, checkpoint
I/O and Hugging Face interop.

Public entry points: :func:`build`, :func:`count_parameters`, :func:`save_checkpoint`, :func:`load_checkpoint`,
:func:`verify_checkpoint`, :func:`from_hf`, :func:`to_hf`, :func:`from_gguf`, :func:`enable_measured_cpu_linears`,
:func:`quantize_int8`, :func:`quantize_int4`,
the pooling helpers :func:`mean_pool`, :func:`cls_pool`, :func:`l2_normalize`, and :data:`STORE` (these, for the
application planes).
"""

from model.build import build, count_parameters
from model.card_writer import make_card
from model.checkpoint import load_checkpoint, save_checkpoint, verify_checkpoint
from model.cpu_inference import clear_linear_choices, enable_measured_cpu_linears, linear_choices
from model.decoder import DecoderLM
from model.encoder import EncoderLM
from model.encoder_decoder import EncoderDecoderLM
from model.gguf import from_gguf
from model.hf import from_hf, to_hf
from model.int4 import Int4Linear, quantize_int4
from model.pooling import cls_pool, l2_normalize, mean_pool
from model.quantize import Int8Linear, quantize_int8
from model.store import STORE
from model.temporaries import clean_stale_temporaries
from specs.errors import CheckpointError

__all__ = [
    "STORE",
    "CheckpointError",
    "DecoderLM",
    "EncoderDecoderLM",
    "EncoderLM",
    "Int4Linear",
    "Int8Linear",
    "build",
    "clean_stale_temporaries",
    "clear_linear_choices",
    "cls_pool",
    "count_parameters",
    "enable_measured_cpu_linears",
    "from_gguf",
    "from_hf",
    "l2_normalize",
    "linear_choices",
    "load_checkpoint",
    "make_card",
    "mean_pool",
    "quantize_int4",
    "quantize_int8",
    "save_checkpoint",
    "to_hf",
    "verify_checkpoint",
]
