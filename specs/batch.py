"""Batch: what data collation hands a trainer, and what an evaluator feeds a model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from specs.tensor_spec import TensorSpec

if TYPE_CHECKING:
    import torch

IGNORE_INDEX = -100  # a label that the loss skips

_IDS = TensorSpec("input_ids", ("B", "T"), dtypes={"int64"})
_LABELS = TensorSpec("labels", ("B", "T"), dtypes={"int64"})
_PAD = TensorSpec("key_padding_mask", ("B", "T"), dtypes={"bool"})
_POS = TensorSpec("positions", ("B", "T"), dtypes={"int64", "int32"})
_DOCS = TensorSpec("document_ids", ("B", "T"), dtypes={"int64", "int32"})


@dataclass(frozen=True, kw_only=True, slots=True)
class Batch:
    """``input_ids (B,T)``; ``labels (B,T)`` with ``-100`` = ignore; ``key_padding_mask (B,T)`` with True = padding;
    ``positions (B,T)``; ``document_ids (B,T)`` for packed sequences (tokens attend within their document)."""

    input_ids: torch.Tensor
    labels: torch.Tensor | None = None
    key_padding_mask: torch.Tensor | None = None
    positions: torch.Tensor | None = None
    document_ids: torch.Tensor | None = None

    def __post_init__(self) -> None:
        dims = _IDS.check(self.input_ids)
        for spec, value in ((_LABELS, self.labels), (_PAD, self.key_padding_mask), (_POS, self.positions),
                            (_DOCS, self.document_ids)):
            if value is not None:
                spec.check(value, dims)
