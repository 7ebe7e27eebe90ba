"""Weight-only int8 quantization for inference, applied from outside the model.

``quantize_int8(model)`` replaces every ``nn.Linear`` with an :class:`Int8Linear`: its weight rounded to int8
with one symmetric scale per output channel (``scale = max|w_row| / 127``, so the rounding error of a weight
is at most half its row's scale), and the rest of the model (embeddings, norms, biases) cast to the compute
dtype, bfloat16 by default. A decode step reads a quarter of the float32 weight bytes, which is what bounds
batch-1 decoding on a CPU.

On CPU a decode step's product runs in ``torch.ops.aten._weight_int8pack_mm`` (int8 weights, bf16/fp16
activations; one fused kernel, no dequantized copy of the weight). That kernel reads whole groups of 16 input
features, so a linear whose ``in_features`` is not a multiple of 16 (it reads past the row otherwise), calls of
more than :data:`FUSED_MAX_ROWS` rows (a prompt: the kernel's time grows with the rows) and other devices use
``F.linear`` on the dequantized weight instead, which ``torch.compile`` fuses on GPUs.

A quantized model is for inference: its parameters are buffers (nothing to train), and tied weights are
untied (the head gets an int8 copy, the embedding table keeps its rows in the compute dtype).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_PACK_GROUP = 16  # features _weight_int8pack_mm reads at a time
FUSED_MAX_ROWS = 8
"""The fused kernel is a matrix-vector product run once per row, so its time grows with the rows while a GEMM on
the dequantized weight barely does. Measured on an Intel Xeon (2 threads, a 576x1536 weight): 30 us fused vs
148 us dequantized at 1 row, 44 vs 155 at 4, equal near 16, 1351 vs 264 at 128. Decode steps (a row per
sequence) take the fused kernel; prompts take the GEMM."""


def quantize_weight(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``weight (N, K)`` -> ``(int8 weight (N, K), float32 scales (N,))`` with ``weight ~= q * scales[:, None]``.
    An all-zero row gets scale 1 (its int8 row is zero either way)."""
    if weight.dim() != 2:
        raise ValueError(f"a linear weight is (out_features, in_features), got shape {tuple(weight.shape)}")
    w = weight.detach().float()
    scales = w.abs().amax(dim=1) / 127.0
    scales = torch.where(scales > 0, scales, torch.ones_like(scales))
    q = torch.round(w / scales[:, None]).clamp_(-127, 127).to(torch.int8)
    return q, scales


class Int8Linear(nn.Module):
    """``y = x @ (q * scales[:, None]).T + bias`` with int8 ``q``; ``x`` is cast to ``compute_dtype``."""

    weight_int8: torch.Tensor
    scales: torch.Tensor
    bias: torch.Tensor | None

    def __init__(self, linear: nn.Linear, compute_dtype: torch.dtype = torch.bfloat16) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.compute_dtype = compute_dtype
        q, scales = quantize_weight(linear.weight)
        self.register_buffer("weight_int8", q.contiguous())
        self.register_buffer("scales", scales.to(compute_dtype))
        bias = None if linear.bias is None else linear.bias.detach().to(compute_dtype)
        self.register_buffer("bias", bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.compute_dtype)
        if x.shape[-1] != self.in_features:
            raise ValueError(f"Int8Linear takes {self.in_features} input features, got input of shape {tuple(x.shape)}")
        y = int8_matmul(x, self.weight_int8, self.scales)
        return y if self.bias is None else y + self.bias

    def dequantized_weight(self) -> torch.Tensor:
        """The float32 weight this layer computes with."""
        return self.weight_int8.float() * self.scales.float()[:, None]

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, compute_dtype={self.compute_dtype}"


def int8_matmul(x: torch.Tensor, q: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """``x (..., K) @ (q * scales[:, None]).T``: the fused CPU kernel where it applies, else a dequantized
    ``F.linear`` (the same numbers up to the rounding of the accumulation)."""
    if fused_kernel_applies(x, q):
        rows = x.reshape(-1, x.shape[-1]).contiguous()
        return torch.ops.aten._weight_int8pack_mm(rows, q, scales).reshape(*x.shape[:-1], q.shape[0])
    return F.linear(x, q.to(x.dtype)) * scales


def fused_kernel_applies(x: torch.Tensor, q: torch.Tensor) -> bool:
    rows = x.numel() // max(x.shape[-1], 1)
    return (
        x.is_cpu and x.dtype in (torch.bfloat16, torch.float16) and q.shape[1] % _PACK_GROUP == 0
        and 0 < rows <= FUSED_MAX_ROWS
    )


def own_int8_buffers(model: nn.Module) -> None:
    """Give every :class:`Int8Linear` freshly allocated weights and scales. Tensors read from a safetensors file
    can start at any byte offset (seen: 24 bytes past a 64-byte boundary), and ``_weight_int8pack_mm`` then
    crashes the process (a segfault in its vectorised loads); the allocator's copies are aligned."""
    for module in model.modules():
        if isinstance(module, Int8Linear):
            module.weight_int8 = module.weight_int8.clone()
            module.scales = module.scales.clone()


def quantize_int8(model: nn.Module, *, compute_dtype: torch.dtype = torch.bfloat16) -> nn.Module:
    """Quantize ``model`` in place for inference (see the module) and return it in eval mode. Applying it twice
    changes nothing more."""
    if compute_dtype not in (torch.bfloat16, torch.float16, torch.float32):
        raise ValueError(f"compute_dtype must be bfloat16, float16 or float32, got {compute_dtype}")
    targets = [(name, module) for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    for name, linear in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, Int8Linear(linear, compute_dtype))
    model.to(compute_dtype)  # embeddings, norms, scales and biases; the int8 buffers keep theirs (only floats cast)
    model.requires_grad_(False)
    return model.eval()
