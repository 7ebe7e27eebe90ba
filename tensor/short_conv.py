"""The short causal depthwise convolution of linear-attention layers (Mamba, Gated DeltaNet), with its state.

Channel ``c`` of output ``t`` is ``sum_j weight[c, j] * x[c, t - K + 1 + j]``: each channel has its own filter of
``K`` taps and sees only the present and the ``K - 1`` inputs before it. The state is those ``K - 1`` last
inputs, so a sequence cut anywhere and fed piece by piece (prefill, then one token per decoding step) gives the
same outputs as in one piece; a zero state is the start of a sequence.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from specs.tensor_spec import TensorSpec

_X = TensorSpec("x", ("B", "C", "T"))
_WEIGHT = TensorSpec("weight", ("C", "K"))


def causal_conv1d(x: Tensor, weight: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """``x (B, C, T)``, ``weight (C, K)``, ``state (B, C, K - 1)`` (zeros when None) -> outputs ``(B, C, T)``
    and the new state: the last ``K - 1`` inputs, the state's included when ``T < K - 1``."""
    dims = _X.check(x)
    taps = _WEIGHT.check(weight, {"C": dims["C"]})["K"]
    if state is None:
        state = x.new_zeros(dims["B"], dims["C"], taps - 1)
    else:
        TensorSpec("state", ("B", "C", taps - 1)).check(state, dims)
    window = torch.cat([state.to(x.dtype), x], dim=-1)  # (B, C, K - 1 + T)
    out = F.conv1d(window, weight.to(x.dtype)[:, None, :], groups=dims["C"])
    return out, window[..., window.shape[-1] - (taps - 1) :]
