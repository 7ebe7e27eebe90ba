"""lmplanes export: ONNX graphs and ``torch.export`` programs of any :class:`specs.CausalLM` (prefill and
KV-cached decoding as functions of tensors), weight-only int8 checkpoints for CPU serving, and ModelPack, a
content-addressed distribution of safetensors shards. Every export directory carries a ``specs.ModelCard``
with the sha256 of each file it wrote and a ``MANIFEST.json``, so ``governance`` takes it from there.

Imports ``specs`` only: the model is handed over by the caller (``pack``'s ``lmplanes export``).
"""

from export.artifact import CardFields
from export.cid import cid_from_sha256
from export.int8 import Int8Report, export_int8, unquantizable
from export.modelpack import ModelPackError, PackFile, pack, parse_manifest
from export.modelpack_fetch import fetch, load_from_modelpack, unpack
from export.onnx_export import export_onnx
from export.pt2_export import export_pt2
from export.traced import DecodeStep, Logits, PastKV, empty_past, past_names, present_names

__all__ = [
    "CardFields",
    "DecodeStep",
    "Int8Report",
    "Logits",
    "ModelPackError",
    "PackFile",
    "PastKV",
    "cid_from_sha256",
    "empty_past",
    "export_int8",
    "export_onnx",
    "export_pt2",
    "fetch",
    "load_from_modelpack",
    "pack",
    "parse_manifest",
    "past_names",
    "present_names",
    "unpack",
    "unquantizable",
]
