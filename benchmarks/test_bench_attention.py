"""pytest-benchmark microbenchmarks of the attention kernels (``manual`` vs ``sdpa``), side by side.

Not part of the test suite (``testpaths`` is ``tests``); run with ``nox -s perf`` or

    pytest benchmarks --benchmark-only -p no:cacheprovider --import-mode=importlib

Each group compares the kernels on one shape: compare ratios within a group, in one run, on one machine.
Rounds are few (``benchmark.pedantic``) so the whole session stays around a minute on a 2-core CPU.
"""

from __future__ import annotations

import pytest
import torch

import kernel
from specs.attention import AttentionCall

KERNELS = ["manual", "sdpa"]
B, H, T, D = 4, 8, 512, 64
ROUNDS = {"rounds": 5, "iterations": 1, "warmup_rounds": 1}
_GEN = torch.Generator().manual_seed(0)


def _randn(*shape: int, grad: bool = False) -> torch.Tensor:
    return torch.randn(*shape, generator=_GEN).requires_grad_(grad)


def _check_parity(name: str, call: AttentionCall) -> None:
    """A benchmark of a wrong answer is worthless: first check the kernel against ``manual`` once."""
    with torch.no_grad():
        plain = AttentionCall(
            q=call.q.detach(), k=call.k.detach(), v=call.v.detach(), causal=call.causal, q_offset=call.q_offset
        )
        torch.testing.assert_close(kernel.resolve(name, plain)(plain), kernel.resolve("manual", plain)(plain))


@pytest.mark.benchmark(group="attention-fwd-bwd")
@pytest.mark.parametrize("name", KERNELS)
def test_causal_forward_backward(benchmark, name):
    q, k, v = _randn(B, H, T, D, grad=True), _randn(B, H, T, D, grad=True), _randn(B, H, T, D, grad=True)
    call = AttentionCall(q=q, k=k, v=v, causal=True)
    fn = kernel.resolve(name, call)
    _check_parity(name, call)
    grad_out = _randn(B, H, T, D)

    def step() -> None:
        for t in (q, k, v):
            t.grad = None
        fn(call).backward(grad_out)

    benchmark.pedantic(step, **ROUNDS)
    assert q.grad is not None and torch.isfinite(q.grad).all()


@pytest.mark.benchmark(group="attention-fwd")
@pytest.mark.parametrize("name", KERNELS)
def test_causal_forward(benchmark, name):
    call = AttentionCall(q=_randn(B, H, T, D), k=_randn(B, H, T, D), v=_randn(B, H, T, D), causal=True)
    fn = kernel.resolve(name, call)
    _check_parity(name, call)

    def forward() -> torch.Tensor:
        with torch.no_grad():
            return fn(call)

    out = benchmark.pedantic(forward, **ROUNDS)
    assert out.shape == (B, H, T, D)


@pytest.mark.benchmark(group="attention-decode")
@pytest.mark.parametrize("name", KERNELS)
def test_decode_step(benchmark, name):
    """One new token against a 512-token cache, GQA 8 query heads over 2 kv heads (bottom-right causal)."""
    hkv, tk = 2, T
    call = AttentionCall(
        q=_randn(B, H, 1, D), k=_randn(B, hkv, tk, D), v=_randn(B, hkv, tk, D), causal=True, q_offset=tk - 1
    )
    fn = kernel.resolve(name, call)
    _check_parity(name, call)

    def decode() -> torch.Tensor:
        with torch.no_grad():
            return fn(call)

    out = benchmark.pedantic(decode, rounds=50, iterations=5, warmup_rounds=2)
    assert out.shape == (B, H, 1, D)
