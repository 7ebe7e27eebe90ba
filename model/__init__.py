"""Model assemblers (decoder-only LM), checkpoint I/O and Hugging Face interop.

Public entry points: :func:`build`, :func:`count_parameters`, :func:`save_checkpoint`, :func:`load_checkpoint`,
:func:`from_hf`, :func:`to_hf`, :func:`apply_activation_checkpointing`, :func:`enable_measured_cpu_linears`.
"""

from model.activation_checkpointing import apply_activation_checkpointing
from model.build import ARCHITECTURES, build, count_parameters
from model.card_writer import make_card
from model.checkpoint import load_checkpoint, save_checkpoint
from model.cpu_inference import clear_linear_choices, enable_measured_cpu_linears, linear_choices
from model.decoder import DecoderLM
from model.hf import HF_FAMILIES, from_hf, to_hf
from model.manifest import CheckpointError, verify_manifest, write_manifest

__all__ = [
    "ARCHITECTURES",
    "HF_FAMILIES",
    "CheckpointError",
    "DecoderLM",
    "apply_activation_checkpointing",
    "build",
    "clear_linear_choices",
    "count_parameters",
    "enable_measured_cpu_linears",
    "from_hf",
    "linear_choices",
    "load_checkpoint",
    "make_card",
    "save_checkpoint",
    "to_hf",
    "verify_manifest",
    "write_manifest",
]
