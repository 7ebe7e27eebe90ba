"""A model wrapper for the engine tests: it records the input shape of each forward."""

from __future__ import annotations

import torch


class CountingForwards:
    """``lm`` that records the input shape of each forward."""

    def __init__(self, lm) -> None:
        self.lm, self.config, self.shapes = lm, lm.config, []

    def __call__(self, input_ids: torch.Tensor, **kwargs):
        self.shapes.append(tuple(input_ids.shape))
        return self.lm(input_ids, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self.lm, name)
