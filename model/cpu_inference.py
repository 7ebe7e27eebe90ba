"""oneDNN linears for CPU inference, applied from outside the model.

PyTorch runs float32 ``nn.Linear`` on the CPU through MKL's GEMM, which on AMD processors takes a slower path
than oneDNN's (measured on a Zen 4 with AVX-512: 2.3x at the llama-55m head's shape; see BENCHMARKS.md).
:func:`enable_onednn_linears` routes the float32 linears of a module through oneDNN whenever no gradient
is needed. Parameters, parameter names, state dicts and training behaviour are unchanged: with autograd
active, or on another device or dtype, the ordinary ``F.linear`` runs. oneDNN keeps its own copy of each
weight in its blocked layout, refreshed when the weight changes, so the memory for weights doubles.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def enable_onednn_linears(module: nn.Module) -> nn.Module:
    """Make every ``nn.Linear`` in ``module`` use oneDNN for float32 CPU inference; returns ``module``."""
    if not torch.backends.mkldnn.is_available() or not hasattr(torch._C._nn, "mkldnn_linear"):
        raise RuntimeError("this PyTorch build has no oneDNN linear (torch.backends.mkldnn / torch._C._nn.mkldnn_linear)")
    for linear in module.modules():
        if isinstance(linear, nn.Linear) and not isinstance(linear.forward, _OneDNNForward):
            linear.forward = _OneDNNForward(linear)
    return module


class _OneDNNForward:
    """A replacement ``forward`` for one linear: oneDNN when it can serve the call, ``F.linear`` otherwise."""

    def __init__(self, linear: nn.Linear) -> None:
        self.linear = linear
        self._packed: tuple[torch.Tensor, torch.Tensor | None] | None = None
        self._packed_from: tuple[int, ...] = ()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self.linear.weight, self.linear.bias
        needs_grad = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)
        if needs_grad or x.device.type != "cpu" or x.dtype != torch.float32 or weight.dtype != torch.float32:
            return F.linear(x, weight, bias)
        packed_weight, packed_bias = self._packed_weights(weight, bias)
        return torch._C._nn.mkldnn_linear(x.contiguous().to_mkldnn(), packed_weight, packed_bias).to_dense()

    def _packed_weights(
        self, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        # Repack when a weight was replaced (data pointer) or modified in place (version counter; inference
        # tensors have none, and cannot be modified outside inference mode anyway).
        source = tuple((t.data_ptr(), 0 if t.is_inference() else t._version) for t in (weight, bias) if t is not None)
        if self._packed is None or source != self._packed_from:
            self._packed = (
                weight.detach().to_mkldnn(),
                bias.detach().to_mkldnn() if bias is not None else None,
            )
            self._packed_from = source
        return self._packed
