"""The prompt side of every decode loop: Hugging Face's left-padding mask, checked, and the allow mask over keys."""

from __future__ import annotations

import torch


def prompt_mask(input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """``(B, T)`` 1/0 flags of real tokens (all ones without a mask), refusing anything but left padding."""
    if input_ids.dim() != 2 or input_ids.shape[1] == 0:
        raise ValueError(f"input_ids must be (B, T) with T >= 1, got shape {list(input_ids.shape)}")
    if attention_mask is None:
        return torch.ones_like(input_ids)
    if attention_mask.shape != input_ids.shape:
        raise ValueError(f"attention_mask has shape {list(attention_mask.shape)}, input_ids {list(input_ids.shape)}")
    mask = attention_mask.long()
    # Left padding only: once a row's tokens start, no padding follows (the mask never goes back down).
    if bool((mask[:, 1:] < mask[:, :-1]).any()) or bool((mask.sum(dim=-1) == 0).any()):
        raise ValueError("attention_mask must be left padding (0s, then 1s) with at least one token per row")
    return mask


def allow_mask(keys: torch.Tensor) -> torch.Tensor:
    """``(R, S)`` real-token flags -> a ``(R, 1, 1, S)`` allow mask over the keys."""
    return keys[:, None, None, :]
