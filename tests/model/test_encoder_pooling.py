"""model.pooling: masked mean, first-token (CLS) pooling and L2 normalisation, against plain loops."""

from __future__ import annotations

import pytest
import torch

import model
from specs.errors import ShapeError


def _batch(lengths: list[int], seq: int, *, left: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    hidden = torch.randn(len(lengths), seq, 6, generator=torch.Generator().manual_seed(0))
    pos = torch.arange(seq)[None, :]
    n = torch.tensor(lengths)[:, None]
    pad = pos < seq - n if left else pos >= n
    return hidden, pad


@pytest.mark.parametrize("left", [False, True], ids=["right-padded", "left-padded"])
def test_mean_pool_averages_the_real_tokens_only(left: bool) -> None:
    hidden, pad = _batch([5, 1, 8], 8, left=left)
    expected = torch.stack([hidden[b][~pad[b]].mean(dim=0) for b in range(3)])
    torch.testing.assert_close(model.mean_pool(hidden, pad), expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(model.mean_pool(hidden), hidden.mean(dim=1), atol=1e-6, rtol=0)


def test_mean_pool_of_an_all_padding_row_is_zero_and_bf16_sums_in_fp32() -> None:
    hidden, pad = _batch([0, 3], 4)
    assert torch.equal(model.mean_pool(hidden, pad)[0], torch.zeros(6))
    long = torch.full((1, 512, 4), 1.0 + 2**-7, dtype=torch.bfloat16)  # a bf16 running sum would drift
    pooled = model.mean_pool(long, torch.zeros(1, 512, dtype=torch.bool))
    assert pooled.dtype == torch.bfloat16 and torch.equal(pooled, long[:, 0])


@pytest.mark.parametrize("left", [False, True], ids=["right-padded", "left-padded"])
def test_cls_pool_takes_each_rows_first_real_token(left: bool) -> None:
    hidden, pad = _batch([5, 2, 8], 8, left=left)
    first = [int((~pad[b]).nonzero()[0]) for b in range(3)]
    assert first == ([3, 6, 0] if left else [0, 0, 0])
    expected = torch.stack([hidden[b, first[b]] for b in range(3)])
    assert torch.equal(model.cls_pool(hidden, pad), expected)
    assert torch.equal(model.cls_pool(hidden), hidden[:, 0])


def test_l2_normalize_gives_unit_rows_and_cosine_dot_products() -> None:
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(1)) * 7
    unit = model.l2_normalize(x)
    torch.testing.assert_close(unit.norm(dim=-1), torch.ones(4))
    torch.testing.assert_close(unit @ unit.T, torch.nn.functional.cosine_similarity(x[:, None], x[None], dim=-1))
    assert torch.equal(model.l2_normalize(torch.zeros(2, 3)), torch.zeros(2, 3))


def test_shapes_are_checked() -> None:
    with pytest.raises(ShapeError, match="hidden"):
        model.mean_pool(torch.zeros(2, 3))
    with pytest.raises(ShapeError, match="key_padding_mask"):
        model.mean_pool(torch.zeros(2, 3, 4), torch.zeros(2, 4, dtype=torch.bool))
    with pytest.raises(ShapeError, match="dtype"):
        model.cls_pool(torch.zeros(2, 3, 4), torch.zeros(2, 3))
