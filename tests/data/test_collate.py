"""collate: right padding, shifted labels with -100, padding mask, positions; positions within documents."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import data
from data.collation import positions_within_documents
from specs import IGNORE_INDEX


def test_variable_lengths_are_right_padded() -> None:
    batch = data.collate([[5, 6, 7, 8], np.array([9, 10]), torch.tensor([11])], pad_id=0)
    assert batch.input_ids.tolist() == [[5, 6, 7, 8], [9, 10, 0, 0], [11, 0, 0, 0]]
    x = IGNORE_INDEX
    assert batch.labels.tolist() == [[6, 7, 8, x], [10, x, x, x], [x, x, x, x]]
    assert batch.key_padding_mask.tolist() == [[False] * 4, [False, False, True, True], [False, True, True, True]]
    assert batch.positions.tolist() == [[0, 1, 2, 3]] * 3
    assert batch.input_ids.dtype == batch.labels.dtype == torch.int64 and batch.document_ids is None


def test_pad_to_fixes_the_width() -> None:
    batch = data.collate([[1, 2]], pad_id=3, pad_to=5)
    assert batch.input_ids.tolist() == [[1, 2, 3, 3, 3]] and batch.key_padding_mask.sum() == 3


@pytest.mark.parametrize(
    ("sequences", "options", "message"),
    [
        ([], {}, "empty list of sequences"),
        ([[1], []], {}, r"empty sequence \(row 1\)"),
        ([[1, 2, 3]], {"pad_to": 2}, "row 0 has 3 tokens, more than pad_to=2"),
    ],
)
def test_collate_errors(sequences: list, options: dict, message: str) -> None:
    with pytest.raises(data.DataError, match=message):
        data.collate(sequences, **options)


def test_positions_restart_at_each_document_and_row() -> None:
    documents = np.array([[0, 0, 0, 1, 1, 2], [4, 4, 4, 4, 4, 4], [0, 1, 2, 2, 3, 3]])
    assert positions_within_documents(documents).tolist() == [
        [0, 1, 2, 0, 1, 0],
        [0, 1, 2, 3, 4, 5],
        [0, 0, 0, 1, 0, 1],
    ]
