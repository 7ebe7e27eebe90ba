"""pytest-benchmark microbenchmarks of every registered attention kernel on the current device, side by side.

Not part of the test suite (``testpaths`` is ``tests``); run with ``nox -s perf`` or

    pytest benchmarks --benchmark-only -p no:cacheprovider --import-mode=importlib

The grid: forward and forward+backward, over T (128 .. 8192 on a GPU, 128 .. 1024 on the CPU), head dim 64 and
128, GQA ratio 1 and 4, causal or not; plus a decode step. The dtype is bfloat16 on a GPU and float32 on the CPU
(``LMPLANES_PERF_DTYPE`` overrides). A kernel that cannot serve a call (``kernel.explain``) is skipped with its
reasons. Each benchmark records achieved TFLOP/s, counting ``4 * B * Hq * Tq * Tk * D`` for the forward, halved
when causal, times 2.5 for forward+backward, and on a GPU the peak memory above the inputs. At the end of the
session every result goes to ``attention-<device>.json`` and a plot of TFLOP/s against T per kernel to
``attention-<device>.png``, in ``$LMPLANES_PERF_OUT`` (default ``benchmarks/out``).

Compare ratios within a group, in one run, on one machine. Rounds are few (``benchmark.pedantic``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

import kernel
from specs.attention import AttentionCall

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPE = getattr(torch, os.environ.get("LMPLANES_PERF_DTYPE", "bfloat16" if DEVICE == "cuda" else "float32"))
LENGTHS = (128, 512, 1024, 2048, 4096, 8192) if DEVICE == "cuda" else (128, 256, 512, 1024)
B, HQ = (4, 16) if DEVICE == "cuda" else (1, 8)
# On a GPU, "sdpa-flash" is the sdpa kernel held to PyTorch's flash back-end: the reference triton_flash is
# measured against (BENCHMARKS.md).
KERNELS = [*kernel.available(), *(["sdpa-flash"] if DEVICE == "cuda" else [])]
ROUNDS = {"rounds": 5, "iterations": 1, "warmup_rounds": 1}
RESULTS: list[dict] = []
_GEN = torch.Generator().manual_seed(0)


def _randn(*shape: int, grad: bool = False) -> torch.Tensor:
    return torch.randn(*shape, generator=_GEN).to(DEVICE, DTYPE).requires_grad_(grad)


def _call(t: int, d: int, gqa: int, causal: bool, *, grad: bool) -> AttentionCall:
    hkv = HQ // gqa
    return AttentionCall(q=_randn(B, HQ, t, d, grad=grad), k=_randn(B, hkv, t, d, grad=grad),
                         v=_randn(B, hkv, t, d, grad=grad), causal=causal)


def _resolve_or_skip(name: str, call: AttentionCall):
    if name == "sdpa-flash":
        return _sdpa_flash(call)
    reasons = kernel.explain(name, call)
    if reasons:
        pytest.skip(f"{name}: {'; '.join(reasons)}")
    _check_parity(name, call)
    return kernel.resolve(name, call)


def _sdpa_flash(call: AttentionCall):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    sdpa = kernel.resolve("sdpa", call)

    def run(c: AttentionCall) -> torch.Tensor:
        with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
            return sdpa(c)

    try:
        run(call)
    except RuntimeError as exc:  # no flash kernel for this dtype/shape/card
        pytest.skip(f"sdpa-flash: {exc}")
    return run


def _check_parity(name: str, call: AttentionCall) -> None:
    """A benchmark of a wrong answer is worthless: first check the kernel against ``manual`` on a slice of
    the call (one row, at most 512 queries and keys, so the oracle's scores fit everywhere)."""
    n = min(call.q.shape[2], 512)
    small = AttentionCall(q=call.q[:1, :, :n].detach(), k=call.k[:1, :, :n].detach(), v=call.v[:1, :, :n].detach(),
                          causal=call.causal)
    tol = {"atol": 1e-4, "rtol": 1e-4} if DTYPE == torch.float32 else {"atol": 3e-2, "rtol": 3e-2}
    with torch.no_grad():
        torch.testing.assert_close(kernel.resolve(name, small)(small), kernel.resolve("manual", small)(small), **tol)


def _measure(benchmark, step, *, flops: float, row: dict) -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()

    def synced() -> None:
        step()
        if DEVICE == "cuda":
            torch.cuda.synchronize()

    benchmark.pedantic(synced, **ROUNDS)
    median = benchmark.stats.stats.median
    peak = torch.cuda.max_memory_allocated() - base if DEVICE == "cuda" else None
    row.update(device=DEVICE, dtype=str(DTYPE).removeprefix("torch."), median_s=median,
               tflops=flops / median / 1e12, peak_bytes=peak)
    benchmark.extra_info.update(tflops=round(row["tflops"], 4), peak_bytes=peak)
    RESULTS.append(row)


GRID = [
    pytest.param(t, d, gqa, causal, id=f"T{t}-D{d}-gqa{gqa}-{'causal' if causal else 'full'}")
    for t in LENGTHS
    for d in (64, 128)
    for gqa in (1, 4)
    for causal in (False, True)
]


@pytest.mark.parametrize("name", KERNELS)
@pytest.mark.parametrize(("t", "d", "gqa", "causal"), GRID)
def test_forward(benchmark, name, t, d, gqa, causal):
    benchmark.group = f"fwd-T{t}-D{d}-gqa{gqa}-{'causal' if causal else 'full'}"
    call = _call(t, d, gqa, causal, grad=False)
    fn = _resolve_or_skip(name, call)

    def step() -> None:
        with torch.no_grad():
            fn(call)

    flops = 4 * B * HQ * t * t * d * (0.5 if causal else 1.0)
    _measure(benchmark, step, flops=flops, row={"kernel": name, "mode": "fwd", "T": t, "D": d, "gqa": gqa,
                                                "causal": causal})


@pytest.mark.parametrize("name", KERNELS)
@pytest.mark.parametrize(("t", "d", "gqa", "causal"), GRID)
def test_forward_backward(benchmark, name, t, d, gqa, causal):
    benchmark.group = f"fwd+bwd-T{t}-D{d}-gqa{gqa}-{'causal' if causal else 'full'}"
    call = _call(t, d, gqa, causal, grad=True)
    fn = _resolve_or_skip(name, call)
    grad_out = _randn(*call.q.shape)

    def step() -> None:
        for x in (call.q, call.k, call.v):
            x.grad = None
        fn(call).backward(grad_out)

    flops = 2.5 * 4 * B * HQ * t * t * d * (0.5 if causal else 1.0)
    _measure(benchmark, step, flops=flops, row={"kernel": name, "mode": "fwd+bwd", "T": t, "D": d, "gqa": gqa,
                                                "causal": causal})


@pytest.mark.benchmark(group="decode")
@pytest.mark.parametrize("name", KERNELS)
def test_decode_step(benchmark, name):
    """One new token against a 512-token cache, GQA 8 query heads over 2 kv heads (bottom-right causal)."""
    tk, d = 512, 64
    call = AttentionCall(q=_randn(B, 8, 1, d), k=_randn(B, 2, tk, d), v=_randn(B, 2, tk, d), causal=True,
                         q_offset=tk - 1)
    fn = _resolve_or_skip(name, call)

    def decode() -> None:
        with torch.no_grad():
            fn(call)

    _measure(benchmark, decode, flops=4 * B * 8 * tk * d, row={"kernel": name, "mode": "decode", "T": tk, "D": d,
                                                             "gqa": 4, "causal": True})


@pytest.fixture(scope="module", autouse=True)
def write_results():
    """After the module: every result as JSON, and TFLOP/s against T per kernel as a PNG."""
    yield
    if not RESULTS:
        return
    out = Path(os.environ.get("LMPLANES_PERF_OUT", Path(__file__).parent / "out"))
    out.mkdir(parents=True, exist_ok=True)
    name = f"attention-{DEVICE}"
    machine = torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu"
    (out / f"{name}.json").write_text(json.dumps({"machine": machine, "torch": torch.__version__,
                                                  "results": RESULTS}, indent=1))
    _plot(out / f"{name}.png", machine)


def _plot(path: Path, machine: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    panels = sorted({(r["mode"], r["D"], r["causal"]) for r in RESULTS if r["mode"] != "decode"})
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.5), squeeze=False)
    for ax, (mode, d, causal) in zip(axes[0], panels):
        for name in KERNELS:
            for gqa in (1, 4):
                rows = sorted((r["T"], r["tflops"]) for r in RESULTS if (r["mode"], r["D"], r["causal"]) ==
                              (mode, d, causal) and r["kernel"] == name and r["gqa"] == gqa)
                if rows:
                    ax.plot(*zip(*rows), marker="o", label=f"{name} gqa{gqa}")
        ax.set(xscale="log", xlabel="T", ylabel="TFLOP/s", title=f"{mode} D={d} {'causal' if causal else 'full'}")
        ax.legend(fontsize=6)
    fig.suptitle(f"attention kernels on {machine}, {str(DTYPE).removeprefix('torch.')}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
