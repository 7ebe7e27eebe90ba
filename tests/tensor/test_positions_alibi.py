"""Sinusoidal position table and ALiBi slopes/bias, checked against the papers' formulas."""

from __future__ import annotations

import math

import pytest
import torch

from tensor import alibi_bias, alibi_slopes, causal_mask, sinusoidal_positions

# ----------------------------------------------------------------------------------------------- sinusoidal


def test_position_zero_alternates_sin0_cos0() -> None:
    table = sinusoidal_positions(torch.tensor([0]), 8)
    assert torch.equal(table[0], torch.tensor([0.0, 1.0] * 4))


def test_values_follow_the_paper_formula() -> None:
    dim, base = 6, 10000.0
    positions = torch.tensor([0, 1, 7, 1000])
    table = sinusoidal_positions(positions, dim, base=base)
    for row, p in enumerate(positions.tolist()):
        for i in range(dim // 2):
            angle = p / base ** (2 * i / dim)
            assert math.isclose(float(table[row, 2 * i]), math.sin(angle), abs_tol=1e-5)
            assert math.isclose(float(table[row, 2 * i + 1]), math.cos(angle), abs_tol=1e-5)


def test_shape_and_dtype_follow_the_positions() -> None:
    table = sinusoidal_positions(torch.arange(10).reshape(2, 5), 16)
    assert table.shape == (2, 5, 16) and table.dtype == torch.float32
    # Batched positions give the same rows as the flat ones.
    assert torch.equal(table.reshape(10, 16), sinusoidal_positions(torch.arange(10), 16))


@pytest.mark.parametrize("dim", [0, 7])
def test_odd_or_empty_dim_is_rejected(dim: int) -> None:
    with pytest.raises(ValueError, match="even"):
        sinusoidal_positions(torch.arange(3), dim)


# ---------------------------------------------------------------------------------------------------- ALiBi


def test_power_of_two_slopes_are_geometric() -> None:
    assert torch.equal(alibi_slopes(8), torch.tensor([2.0**-k for k in range(1, 9)]))
    assert torch.equal(alibi_slopes(4), torch.tensor([2.0**-2, 2.0**-4, 2.0**-6, 2.0**-8]))
    assert torch.equal(alibi_slopes(1), torch.tensor([2.0**-8]))


def test_twelve_heads_follow_the_bloom_rule() -> None:
    # 8 is the closest lower power of two: its slopes 2^-1..2^-8, then the 1st, 3rd, 5th and 7th slopes of
    # 16 heads, whose ratio is 2^(-8/16) = 2^-0.5.
    expected = [2.0**-k for k in range(1, 9)] + [2.0 ** (-0.5 * k) for k in (1, 3, 5, 7)]
    torch.testing.assert_close(alibi_slopes(12), torch.tensor(expected), rtol=1e-6, atol=0)


def test_slopes_reject_no_heads() -> None:
    with pytest.raises(ValueError):
        alibi_slopes(0)


@pytest.mark.parametrize(("tq", "tk", "q_offset"), [(5, 5, 0), (2, 6, 4), (3, 8, 1)])
def test_bias_is_slope_times_signed_distance(tq: int, tk: int, q_offset: int) -> None:
    slopes = alibi_slopes(4)
    bias = alibi_bias(slopes, tq, tk, q_offset=q_offset)
    assert bias.shape == (4, tq, tk) and bias.dtype == torch.float32
    for h in range(4):
        for i in range(tq):
            for j in range(tk):
                assert float(bias[h, i, j]) == float(slopes[h]) * (j - (q_offset + i))


def test_bias_is_zero_on_the_own_position_and_negative_in_the_past() -> None:
    tq, tk = 3, 7
    bias = alibi_bias(alibi_slopes(6), tq, tk, q_offset=tk - tq)
    own = torch.zeros(tq, tk, dtype=torch.bool)
    own[torch.arange(tq), torch.arange(tk - tq, tk)] = True
    past = causal_mask(tq, tk, q_offset=tk - tq) & ~own
    assert (bias[:, own] == 0).all()
    assert (bias[:, past] < 0).all()
