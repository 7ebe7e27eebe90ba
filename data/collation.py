"""Collation into :class:`specs.Batch`, and positions that restart at every document.

Labels are already shifted: ``labels[b, t]`` is the token that the prediction at position ``t`` should be
(the next token), and ``-100`` (``specs.IGNORE_INDEX``) where there is none: after a sequence's last token,
on padding, and across a document boundary in a packed row.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from data.errors import DataError
from specs import IGNORE_INDEX, Batch


def positions_within_documents(document_ids: np.ndarray) -> np.ndarray:
    """For ``(B, T)`` document ids, each token's position in its document segment of the row (0 at a start).

    A row's first token starts a segment even in the middle of a document: the model sees nothing before it.
    """
    steps = np.arange(document_ids.shape[1], dtype=np.int64)
    starts_here = np.ones(document_ids.shape, dtype=bool)
    starts_here[:, 1:] = document_ids[:, 1:] != document_ids[:, :-1]
    segment_start = np.maximum.accumulate(np.where(starts_here, steps, 0), axis=1)
    return steps - segment_start


def collate(sequences: Sequence[Sequence[int] | Any], *, pad_id: int = 0, pad_to: int | None = None) -> Batch:
    """Right-pad token sequences of any lengths into one :class:`specs.Batch`.

    Row ``b`` holds sequence ``b``; ``labels`` are the next tokens (``-100`` after the last one and on padding),
    ``key_padding_mask`` is True on padding, ``positions`` count from 0. ``pad_to`` fixes the width (e.g. for a
    compiled model); by default it is the longest sequence. Sequences may be lists, numpy arrays or tensors.
    """
    rows = [np.asarray(torch.as_tensor(s).cpu(), dtype=np.int64).reshape(-1) for s in sequences]
    if not rows:
        raise DataError("cannot collate an empty list of sequences")
    lengths = np.array([len(r) for r in rows])
    if lengths.min() == 0:
        raise DataError(f"cannot collate an empty sequence (row {int(lengths.argmin())})")
    width = int(lengths.max()) if pad_to is None else pad_to
    if width < lengths.max():
        raise DataError(f"row {int(lengths.argmax())} has {int(lengths.max())} tokens, more than pad_to={pad_to}")
    input_ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    labels = np.full((len(rows), width), IGNORE_INDEX, dtype=np.int64)
    for b, row in enumerate(rows):  # one row at a time: this runs once per batch, not per token
        input_ids[b, : len(row)] = row
        labels[b, : len(row) - 1] = row[1:]
    padding = np.arange(width)[None, :] >= lengths[:, None]
    return Batch(
        input_ids=torch.from_numpy(input_ids),
        labels=torch.from_numpy(labels),
        key_padding_mask=torch.from_numpy(padding),
        positions=torch.arange(width, dtype=torch.int64).expand(len(rows), width).contiguous(),
    )
