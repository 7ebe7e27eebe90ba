"""Weight initialisers: statistics on large tensors with a fixed seed, and the GPT-2 residual scale."""

from __future__ import annotations

import math

import pytest
import torch

from tensor import init_normal_, init_trunc_normal_, init_zeros_, residual_std


def test_residual_std_is_gpt2_scaling() -> None:
    assert residual_std(0.02, 12) == 0.02 / math.sqrt(24)
    assert residual_std(1.0, 1) == 1 / math.sqrt(2)


def test_residual_std_rejects_no_layers() -> None:
    with pytest.raises(ValueError, match="n_layers"):
        residual_std(0.02, 0)


def test_init_normal_has_the_requested_moments() -> None:
    torch.manual_seed(0)
    weight = torch.nn.Parameter(torch.empty(512, 512))
    out = init_normal_(weight, 0.02)
    assert out is weight
    values = weight.detach()
    # 262k samples: the sample std is within ~0.3 % of the true one (allow 2 %), and the mean has a standard
    # error of 0.02 / 512 ~ 4e-5 (allow 5 of them).
    assert abs(float(values.std()) / 0.02 - 1) < 0.02
    assert abs(float(values.mean())) < 2e-4
    assert weight.grad_fn is None and weight.requires_grad


def test_init_trunc_normal_respects_bounds() -> None:
    torch.manual_seed(0)
    weight = torch.empty(256, 256)
    init_trunc_normal_(weight, 0.02)
    assert float(weight.abs().max()) <= 3 * 0.02
    # Truncating at 3 sigma shrinks the std by about 1.3 %.
    assert abs(float(weight.std()) / 0.02 - 1) < 0.03
    init_trunc_normal_(weight, 1.0, a=-0.5, b=0.25)
    assert float(weight.min()) >= -0.5 and float(weight.max()) <= 0.25


def test_init_trunc_normal_rejects_empty_interval() -> None:
    with pytest.raises(ValueError, match="a < b"):
        init_trunc_normal_(torch.empty(3), 1.0, a=1.0, b=1.0)


def test_init_zeros_() -> None:
    bias = torch.nn.Parameter(torch.ones(7))
    assert init_zeros_(bias) is bias
    assert not bias.any()
