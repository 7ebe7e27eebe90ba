"""From an encoder's hidden states ``(B, T, C)`` to one vector per row ``(B, C)``, and L2 normalisation.

Padding follows ``specs.Batch``: ``key_padding_mask (B, T)`` bool, True = padding. Sentence embeddings in the
sentence-transformers style are ``l2_normalize(mean_pool(hidden, key_padding_mask))``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from specs.tensor_spec import TensorSpec

_HIDDEN = TensorSpec("hidden", ("B", "T", "C"))
_PADDING = TensorSpec("key_padding_mask", ("B", "T"), dtypes={"bool"})


def mean_pool(hidden: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
    """The mean of each row's real (non-padding) token states. Sums run in float32 (a bf16 sum over hundreds of
    tokens would lose the small terms); the result has ``hidden``'s dtype. A row of nothing but padding pools
    to zeros."""
    dims = _HIDDEN.check(hidden)
    if key_padding_mask is None:
        return hidden.float().mean(dim=1).to(hidden.dtype)
    _PADDING.check(key_padding_mask, B=dims["B"], T=dims["T"])
    keep = (~key_padding_mask).unsqueeze(-1).to(torch.float32)  # (B, T, 1)
    summed = (hidden.float() * keep).sum(dim=1)
    return (summed / keep.sum(dim=1).clamp(min=1.0)).to(hidden.dtype)


def cls_pool(hidden: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Each row's first real token (BERT's ``[CLS]``): position 0, or the first non-padding position when rows
    are padded on the left (a row of nothing but padding gives its position 0)."""
    dims = _HIDDEN.check(hidden)
    if key_padding_mask is None:
        return hidden[:, 0]
    _PADDING.check(key_padding_mask, B=dims["B"], T=dims["T"])
    first = (~key_padding_mask).to(torch.int8).argmax(dim=1)  # argmax returns the first maximum
    return hidden[torch.arange(dims["B"], device=hidden.device), first]


def l2_normalize(x: torch.Tensor, *, eps: float = 1e-12) -> torch.Tensor:
    """``x / max(||x||_2, eps)`` over the last dim, so dot products of the results are cosine similarities."""
    return F.normalize(x, p=2.0, dim=-1, eps=eps)
