"""Every kernel under autocast, forward and backward, as a trainer runs them (mixed precision).

q/k/v come out of autocast projections in the low precision, the way they do inside a model. The reference
is the ``manual`` kernel on the same low-precision q/k/v outside autocast (float32 math, one rounding), so
the tolerance is bfloat16/float16 rounding: 2e-2 relative (see tests/kernel/test_sdpa_vs_manual.py).
``"auto"`` runs with a cleared choice cache, so its first call (which times every candidate) runs under
autocast too.
"""

from __future__ import annotations

import pytest
import torch

import kernel
from kernel.registry import clear_auto_choices
from specs.attention import AttentionCall

DEVICES = [("cpu", torch.bfloat16)]
if torch.cuda.is_available():
    DEVICES += [("cuda", torch.bfloat16), ("cuda", torch.float16)]

CALLS = {
    "causal": {"causal": True},
    "decode": {"causal": True, "q_offset": 9},
    "per_row_window": {"causal": True, "window": 4, "q_offset": torch.tensor([9, 3])},
    "padding": {"kv_lens": torch.tensor([12, 5])},
}


def _projected(device: str, dtype: torch.dtype, tq: int, seed: int):
    """Leaf weights in float32 and q/k/v produced from them under autocast (so they are ``dtype``)."""
    gen = torch.Generator().manual_seed(seed)
    x_q = torch.randn(2, tq, 32, generator=gen).to(device)
    x_kv = torch.randn(2, 12, 32, generator=gen).to(device)
    weights = [(torch.randn(32, 32, generator=gen) / 6).to(device).requires_grad_() for _ in range(3)]
    with torch.autocast(device, dtype=dtype):
        q = (x_q @ weights[0]).view(2, tq, 4, 8).transpose(1, 2)
        k = (x_kv @ weights[1]).view(2, 12, 4, 8)[:, :, :2].transpose(1, 2)
        v = (x_kv @ weights[2]).view(2, 12, 4, 8)[:, :, :2].transpose(1, 2)
    assert q.dtype == dtype
    return weights, q, k, v


@pytest.mark.parametrize(("device", "dtype"), DEVICES)
@pytest.mark.parametrize("which", list(CALLS))
@pytest.mark.parametrize("name", [*kernel.available(), "auto"])
def test_kernel_under_autocast_forward_and_backward(name, which, device, dtype):
    kw = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in CALLS[which].items()}
    tq = 3 if which in ("decode", "per_row_window") else 12
    call_probe = AttentionCall(q=torch.zeros(2, 4, tq, 8, dtype=dtype, device=device),
                               k=torch.zeros(2, 2, 12, 8, dtype=dtype, device=device),
                               v=torch.zeros(2, 2, 12, 8, dtype=dtype, device=device), **kw)
    if name != "auto" and kernel.explain(name, call_probe):
        pytest.skip(f"{name} does not serve this call: {kernel.explain(name, call_probe)}")  # e.g. a GPU-only kernel
    clear_auto_choices()
    weights, q, k, v = _projected(device, dtype, tq, seed=len(which))
    with torch.autocast(device, dtype=dtype):
        call = AttentionCall(q=q, k=k, v=v, **kw)
        out = kernel.resolve(name, call)(call)
        loss = out.float().square().mean()
    assert out.dtype == dtype and torch.isfinite(out).all()
    loss.backward()
    grads = [w.grad for w in weights]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)

    # Reference: the same low-precision q/k/v through the oracle with autocast off, differentiated alike.
    ref_weights, q2, k2, v2 = _projected(device, dtype, tq, seed=len(which))
    ref_call = AttentionCall(q=q2, k=k2, v=v2, **kw)
    ref = kernel.resolve("manual", ref_call)(ref_call)
    ref.float().square().mean().backward()
    tol = {"atol": 2e-2, "rtol": 2e-2}
    torch.testing.assert_close(out.float(), ref.float(), **tol)
    for got, want in zip(grads, (w.grad for w in ref_weights)):
        torch.testing.assert_close(got, want, atol=2e-2 * max(1.0, want.abs().max().item()), rtol=2e-2)
