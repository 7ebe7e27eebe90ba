"""Running an attention call on the kernel a layer's config names (or ``"auto"``)."""

from __future__ import annotations

import torch

from kernel.registry import can_serve, resolve
from specs.attention import AttentionCall
from tensor.paged import dense_call


def attend(kernel: str, call: AttentionCall) -> torch.Tensor:
    """``call`` on kernel ``kernel``. A paged call goes to a kernel that reads pages when one can serve it;
    otherwise the pages are gathered into dense keys/values first (what a kernel without ``paged`` needs)."""
    if call.block_table is not None and not can_serve(kernel, call):
        call = dense_call(call)
    return resolve(kernel, call)(call)
