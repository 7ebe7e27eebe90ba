"""softcap, rms_norm (against Hugging Face LlamaRMSNorm) and drop_path."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tensor import drop_path, rms_norm, softcap

# ------------------------------------------------------------------------------------------------- softcap


@settings(max_examples=30, deadline=None)
@given(
    cap=st.floats(min_value=0.5, max_value=100.0),
    values=st.lists(st.floats(min_value=-1e6, max_value=1e6), min_size=1, max_size=16),
)
def test_softcap_is_bounded_monotone_and_sign_keeping(cap: float, values: list[float]) -> None:
    x = torch.tensor(sorted(values), dtype=torch.float32)
    y = softcap(x, cap)
    assert (y.abs() <= cap).all()
    assert (y.diff() >= 0).all()
    # Never flips a sign (a subnormal x may underflow to 0 in x / cap, so not "keeps the sign").
    assert (y * x >= 0).all()


def test_softcap_is_near_identity_for_small_inputs() -> None:
    x = torch.linspace(-0.1, 0.1, 101)
    # tanh(u) = u - u^3/3 + ..., so the error is ~ |x|^3 / (3 cap^2) <= 1e-3 / 3 / 900.
    torch.testing.assert_close(softcap(x, 30.0), x, rtol=0, atol=1e-6)


def test_softcap_rejects_non_positive_cap() -> None:
    with pytest.raises(ValueError, match="cap"):
        softcap(torch.ones(2), 0.0)


# ------------------------------------------------------------------------------------------------ rms_norm


def _hf_rms_norm(dim: int, eps: float, weight: torch.Tensor) -> torch.nn.Module:
    from transformers.models.llama import modeling_llama as llama
    module = llama.LlamaRMSNorm(dim, eps=eps)
    with torch.no_grad():
        module.weight.copy_(weight)
    return module


@pytest.mark.parametrize("eps", [1e-6, 1e-5])
def test_rms_norm_matches_hf_in_fp32(eps: float) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 64, generator=g) * 4
    weight = torch.randn(64, generator=g)
    hf = _hf_rms_norm(64, eps, weight)
    with torch.no_grad():
        torch.testing.assert_close(rms_norm(x, weight, eps), hf(x), rtol=0, atol=1e-6)


def test_rms_norm_matches_hf_in_bf16() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 64, generator=g).to(torch.bfloat16)
    weight = torch.randn(64, generator=g).to(torch.bfloat16)
    hf = _hf_rms_norm(64, 1e-6, weight).to(torch.bfloat16)
    with torch.no_grad():
        out = rms_norm(x, weight, 1e-6)
        assert out.dtype == torch.bfloat16
        assert torch.equal(out, hf(x))


def test_rms_norm_without_weight_has_unit_rms() -> None:
    x = torch.randn(8, 32, generator=torch.Generator().manual_seed(2)) * 10
    out = rms_norm(x, None, 1e-6)
    torch.testing.assert_close(out.pow(2).mean(-1), torch.ones(8), rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------------------------- drop_path


def test_drop_path_is_identity_in_eval_and_at_zero() -> None:
    x = torch.randn(4, 3, 5)
    assert drop_path(x, 0.5, training=False) is x
    assert drop_path(x, 0.0, training=True) is x


def test_drop_path_zeroes_whole_samples_and_rescales_survivors() -> None:
    torch.manual_seed(0)
    x = torch.randn(64, 3, 5) + 10  # no zeros in x, so a zero means "dropped"
    p = 0.25
    out = drop_path(x, p, training=True)
    dropped = (out == 0).flatten(1)
    # Every sample is either dropped entirely or kept entirely, scaled by 1 / (1 - p).
    assert torch.equal(dropped.all(1), dropped.any(1))
    kept = ~dropped.all(1)
    torch.testing.assert_close(out[kept], x[kept] / (1 - p))
    assert 0 < int(kept.sum()) < 64


def test_drop_path_keeps_the_expectation() -> None:
    torch.manual_seed(0)
    p, n = 0.3, 20_000
    x = torch.ones(n, 4)
    out = drop_path(x, p, training=True)
    # Each sample is 0 or 1/(1-p): the mean has std sqrt(p / (1 - p) / n) ~ 0.0046; allow 5 sigma.
    assert abs(float(out.mean()) - 1.0) < 0.025


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5])
def test_drop_path_rejects_p_outside_unit_interval(p: float) -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        drop_path(torch.ones(2, 2), p, training=False)
