"""Model FLOPs utilisation: the training FLOPs a step must do, over what the hardware could do in that time.

Training FLOPs per token follow the PaLM paper's count: ``6 N`` for the ``N`` non-embedding parameters
(forward and backward matmuls) plus ``12 L H Q T`` for attention scores and values (``L`` layers, ``H``
heads of width ``Q``, context ``T``). The peak is the device's dense rate for the training dtype: for known
NVIDIA GPUs from their data sheets, and for a CPU measured once per process with a large matrix multiply (so
CPU MFU says how close the run comes to what this machine's GEMM actually reaches).
"""

from __future__ import annotations

import functools
import time

import torch
from torch import nn

from specs.model_config import ModelConfig

# Dense (not sparse) tensor-core TFLOP/s from NVIDIA's data sheets, by a substring of the device name.
_GPU_PEAK_TFLOPS = {
    "H200": {"bfloat16": 989.0, "float32": 67.0},
    "H100": {"bfloat16": 989.0, "float32": 67.0},
    "A100": {"bfloat16": 312.0, "float32": 19.5},
    "L4": {"bfloat16": 121.0, "float32": 30.3},
    "A10": {"bfloat16": 125.0, "float32": 31.2},
}


def flops_per_token(model: nn.Module, seq_len: int) -> float:
    embedding_ids = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    non_embedding = sum(p.numel() for p in model.parameters() if id(p) not in embedding_ids)
    cfg = getattr(model, "config", None)
    if not isinstance(cfg, ModelConfig):
        raise TypeError(f"{type(model).__name__} carries no ModelConfig (specs.CausalLM.config)")
    attention = 12 * cfg.n_layers * cfg.attention.n_heads * cfg.head_dim * seq_len
    return 6.0 * non_embedding + attention


def peak_flops(device: torch.device, dtype: str) -> float | None:
    """FLOP/s the device reaches on dense matmuls in ``dtype``, or None when unknown."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, peaks in _GPU_PEAK_TFLOPS.items():
            if key in name:
                return peaks.get(dtype, peaks["float32"]) * 1e12
        return None
    if device.type == "cpu":
        return _measured_cpu_peak(dtype)
    return None


@functools.cache
def _measured_cpu_peak(dtype: str) -> float:
    """The best of a few 1024^3 matmuls in ``dtype`` on this CPU, in FLOP/s (about 0.1 s, once per process)."""
    torch_dtype = getattr(torch, dtype)
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(1024, 1024, generator=gen).to(torch_dtype)
    b = torch.randn(1024, 1024, generator=gen).to(torch_dtype)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * 1024**3 / best
