"""Weight-only int4 quantization for inference, applied from outside the model.

``quantize_int4(model)`` replaces every ``nn.Linear`` with an :class:`Int4Linear`: each run of ``group_size``
input features of an output row (32 by default) gets its own scale and offset, ``w ~= q * scale + min`` with
``q`` in 0..15, ``scale = (max - min) / 15`` -- llama.cpp's Q4_1 scheme. So a model imported from a Q4_1 GGUF
file (``model.from_gguf``, which dequantizes) quantizes back to the file's own 4-bit values: the group's
minimum and maximum are its codes 0 and 15 (for files made by llama.cpp's quantizer; checked on SmolLM2 in the
tests). A decode step reads an eighth of the float32 weight bytes.

The scale and offset are kept in the compute dtype (bfloat16), as ``(q - 8) * scale + zero`` with ``zero = min
+ 8 * scale``: the form ``torch.ops.aten._weight_int4pack_mm_for_cpu`` computes with, so the fused CPU kernel
and the dequantized fallback compute the same weights. The rounding of the scale and offset to bfloat16 moves a
weight by at most about 2**-8 of its group's range, the order of a bfloat16 weight's own rounding.

The fused kernel's time grows with the rows (a matrix-vector product per row) and it takes bfloat16
activations only (float32 and float16 take a scalar path, 20-30x slower, measured), so it serves calls of up to
:data:`FUSED_MAX_ROWS` rows on CPU -- decode steps and short prompts; longer prompts, other devices and layers
the kernel cannot take (output features not a multiple of 16) use ``F.linear`` on the dequantized weight. The
kernel's weight layout is ATen's private one (packed for the vector width it was built for), so it is a
non-persistent buffer rebuilt from the portable one: the state dict holds the 4-bit codes two to a byte
(``weight_int4``, even column in the low nibble) and ``scales_and_zeros``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from model.quantize import Int8Linear

GROUP_SIZES = (32, 64, 128, 256)
FUSED_MAX_ROWS = 64
"""Rows up to which the fused kernel beats dequantizing the weight for a GEMM. Measured on an Intel Xeon (2
threads, bfloat16, 1536x576 and 576x1536 weights): fused ~10 us a row (48 at 4 rows, 320 at 32, 630 at 64, 1250
at 128); dequantizing the weight then one GEMM 0.6-0.75 ms whatever the rows (up to 128). A 192x576 weight
crosses over at the same place (85 vs 143 us at 64 rows, 162 vs 168 at 128)."""
_PACK_ROWS = 16  # the kernel's layout packs output rows in sixteens
_MID = 8  # the code the kernel subtracts: w = (q - 8) * scale + zero


def quantize_weight_int4(weight: torch.Tensor, group_size: int = 32) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``weight (N, K)`` -> ``(codes (N, K) uint8 in 0..15, scales (N, K / group_size), mins (same))``, float32,
    with ``weight ~= codes * scales + mins`` per group. A constant group gets scale 1 and all codes 0."""
    if weight.dim() != 2:
        raise ValueError(f"a linear weight is (out_features, in_features), got shape {tuple(weight.shape)}")
    if group_size not in GROUP_SIZES:
        raise ValueError(f"group_size must be one of {GROUP_SIZES}, got {group_size}")
    n, k = weight.shape
    if k % group_size:
        raise ValueError(f"in_features {k} is not a multiple of group_size {group_size}")
    w = weight.detach().float().reshape(n, k // group_size, group_size)
    mins, maxs = w.amin(dim=-1), w.amax(dim=-1)
    scales = (maxs - mins) / 15.0
    scales = torch.where(scales > 0, scales, torch.ones_like(scales))
    codes = torch.round((w - mins[..., None]) / scales[..., None]).clamp_(0, 15)
    return codes.reshape(n, k).to(torch.uint8), scales, mins


class Int4Linear(nn.Module):
    """``y = x @ W.T + bias`` with ``W = (q - 8) * scale + zero`` per group of ``group_size`` input features;
    ``x`` is cast to ``compute_dtype``."""

    weight_int4: torch.Tensor
    scales_and_zeros: torch.Tensor
    bias: torch.Tensor | None
    weight_packed: torch.Tensor | None

    def __init__(self, linear: nn.Linear, group_size: int = 32, compute_dtype: torch.dtype = torch.bfloat16) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.group_size, self.compute_dtype = group_size, compute_dtype
        codes, scales, mins = quantize_weight_int4(linear.weight, group_size)
        self.register_buffer("weight_int4", codes[:, 0::2] | (codes[:, 1::2] << 4))
        zeros = mins + _MID * scales
        self.register_buffer("scales_and_zeros", torch.stack([scales.t(), zeros.t()], dim=-1).to(compute_dtype).contiguous())
        bias = None if linear.bias is None else linear.bias.detach().to(compute_dtype)
        self.register_buffer("bias", bias)
        self.register_buffer("weight_packed", None, persistent=False)
        self.repack()

    def repack(self) -> None:
        """Rebuild the fused kernel's copy of the weight from ``weight_int4`` (after loading a state dict)."""
        packable = self.weight_int4.is_cpu and self.out_features % _PACK_ROWS == 0
        self.weight_packed = (
            torch.ops.aten._convert_weight_to_int4pack_for_cpu(self.codes().to(torch.int32), 1) if packable else None
        )

    def codes(self) -> torch.Tensor:
        """The 4-bit codes, ``(out_features, in_features)`` uint8."""
        return torch.stack([self.weight_int4 & 15, self.weight_int4 >> 4], dim=-1).reshape(self.out_features, -1)

    def dequantized_weight(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The weight this layer computes with, ``(out_features, in_features)``: what a prompt's GEMM reads, so it
        is written in place into one buffer (a 1536x576 weight in bf16: 0.51 ms, against 0.65 for the plain
        expression, measured; ~210 of them make a SmolLM2 prompt's time to first token)."""
        n, k = self.out_features, self.in_features
        weight = torch.empty(n, k // 2, 2, dtype=dtype, device=self.weight_int4.device)
        weight[..., 0] = self.weight_int4 & 15  # even columns sit in the low nibbles
        weight[..., 1] = self.weight_int4 >> 4
        scales, zeros = (self.scales_and_zeros[..., i].t().to(dtype)[..., None] for i in (0, 1))
        # (q - 8) * scale + zero, as the kernel computes: folding -8 * scale into the offset first would round
        # the group's minimum, often larger than its weights, to bf16 (measured: twice the error against it).
        weight.view(n, k // self.group_size, self.group_size).sub_(_MID).mul_(scales).add_(zeros)
        return weight.view(n, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.compute_dtype)
        if x.shape[-1] != self.in_features:
            raise ValueError(f"Int4Linear takes {self.in_features} input features, got input of shape {tuple(x.shape)}")
        rows = x.numel() // self.in_features
        if self.weight_packed is not None and x.is_cpu and x.dtype == torch.bfloat16 and 0 < rows <= FUSED_MAX_ROWS:
            flat = x.reshape(rows, self.in_features).contiguous()
            y = torch.ops.aten._weight_int4pack_mm_for_cpu(flat, self.weight_packed, self.group_size, self.scales_and_zeros)
            y = y.reshape(*x.shape[:-1], self.out_features)
        else:
            y = F.linear(x, self.dequantized_weight(x.dtype))
        return y if self.bias is None else y + self.bias

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self.repack()

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, group_size={self.group_size}, "
                f"compute_dtype={self.compute_dtype}")


def quantize_int4(
    model: nn.Module, *, group_size: int = 32, compute_dtype: torch.dtype = torch.bfloat16, head: str = "int8"
) -> nn.Module:
    """Quantize ``model`` in place for inference (see the module) and return it in eval mode. ``head``: what the
    output head becomes -- ``"int8"`` (default: a scale per output channel, :class:`model.Int8Linear`),
    ``"int4"`` like the other linears, or ``"float"`` (left in ``compute_dtype``). Every other linear must have
    ``in_features`` divisible by ``group_size``; the layers that do not are all named in one ``ValueError``."""
    if compute_dtype != torch.bfloat16:
        raise ValueError(f"int4 weights compute in bfloat16 (the only dtype the fused kernel takes), got {compute_dtype}")
    if group_size not in GROUP_SIZES:
        raise ValueError(f"group_size must be one of {GROUP_SIZES}, got {group_size}")
    if head not in ("int8", "int4", "float"):
        raise ValueError(f"head must be 'int8', 'int4' or 'float', got {head!r}")
    output_head = getattr(model, "output_head", None)  # specs.CausalLM's: the module that maps to logits
    head_linears = {id(m) for m in output_head().modules()} if callable(output_head) else set()
    targets = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    misfits = [f"{name} (in_features {m.in_features})" for name, m in targets
               if m.in_features % group_size and not (id(m) in head_linears and head != "int4")]
    if misfits:
        raise ValueError(f"group_size {group_size} does not divide the input features of: {', '.join(misfits)}")
    for name, linear in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        if id(linear) in head_linears and head == "float":
            continue  # cast below with the rest, still tied to the embedding if it was
        if id(linear) in head_linears and head == "int8":
            setattr(parent, child, Int8Linear(linear, compute_dtype))
        else:
            setattr(parent, child, Int4Linear(linear, group_size, compute_dtype))
    model.to(compute_dtype)  # embeddings, norms, scales and biases; the uint8 codes keep theirs
    model.requires_grad_(False)
    return model.eval()
