"""Measured CPU linears for inference, applied from outside the model.

A float32 CPU ``nn.Linear`` can run two ways: the ordinary ``F.linear`` (ATen's GEMM), or oneDNN's
``mkldnn_linear`` on a copy of the weight prepacked in oneDNN's blocked layout. Which is faster depends on the
processor and on the call's shape. On one AMD EPYC (Zen 4) prepacked oneDNN made a 1 x 128 prefill of
llama-55m about 1.6x faster yet slowed batch-1 decoding; on an Intel Xeon with AMX it was slower for both
(BENCHMARKS.md). So nothing is assumed per vendor: :func:`enable_measured_cpu_linears` makes every linear of a
module decide *by measuring*, the way ``kernel.resolve("auto", ...)`` picks attention kernels.

The decision is made per shape bucket (:class:`LinearBucket`: rows -- the product of the input's leading
dimensions -- rounded up to a power of two, so a prefill (rows = B*T) and a decode step (rows = B) are decided
apart; in/out features; bias or not; the intra-op thread count). The first call in a bucket times both paths on
its own input (interleaved, a warm-up then at least five repeats, medians; under ``torch.no_grad`` with the RNG state
restored) and caches the winner process-wide, so linears of the same shape share it and later calls run the
winner with no timing. oneDNN must win by a margin (:data:`ONEDNN_MARGIN`) because it costs a second copy of
the weight; the copy is only kept for linears that use it. :func:`linear_choices` shows the decisions and
:func:`clear_linear_choices` forgets them (to measure again, say once a busy machine is quiet).

Parameters, parameter names, state dicts and training are unchanged. The ordinary ``F.linear`` runs, untimed,
whenever a gradient is needed, on any other device or dtype, while ``torch.compile`` traces, and on a PyTorch
build without oneDNN (the path is optional at run time).
"""

from __future__ import annotations

import functools
import logging
import statistics
import time
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

F_LINEAR, ONEDNN = "f.linear", "onednn"
WARMUP, REPEATS, MAX_REPEATS, MIN_SECONDS = 1, 5, 50, 0.01
ONEDNN_MARGIN = 0.9
"""oneDNN is chosen only when its median is below this fraction of ``F.linear``'s (it costs a weight copy)."""


class LinearBucket(NamedTuple):
    """Calls in one bucket share a decision."""

    rows: int  # product of the input's leading dimensions, rounded up to a power of two
    in_features: int
    out_features: int
    bias: bool
    threads: int  # torch.get_num_threads() at the call


class LinearChoice(NamedTuple):
    path: str  # F_LINEAR or ONEDNN
    seconds: dict[str, float]  # the measured median of each path


# Keyed by plain tuples on the hot path; a LinearBucket equals, and hashes as, the same tuple.
_CHOICES: dict[tuple[int, int, int, bool, int], LinearChoice] = {}


def enable_measured_cpu_linears(module: nn.Module) -> nn.Module:
    """Make every ``nn.Linear`` in ``module`` choose, per shape bucket and by measuring on this machine, between
    ``F.linear`` and oneDNN for float32 CPU inference; returns ``module``. Applying it twice changes nothing."""
    if not onednn_available():
        log.warning("this PyTorch build has no oneDNN linear; float32 CPU linears will use F.linear")
    for linear in module.modules():
        if isinstance(linear, nn.Linear) and not isinstance(linear.forward, _MeasuredForward):
            # An instance attribute shadows the method: the module, its parameters and state dict stay as they are.
            linear.forward = _MeasuredForward(linear)  # type: ignore[method-assign, assignment]
    return module


def linear_choices() -> dict[LinearBucket, LinearChoice]:
    """The decisions made so far in this process, per bucket."""
    return {LinearBucket(*key): choice for key, choice in _CHOICES.items()}


def clear_linear_choices() -> None:
    """Forget every decision; the next call in each bucket measures again."""
    _CHOICES.clear()


@functools.cache
def onednn_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch._C._nn, "mkldnn_linear")


def linear_bucket(x: torch.Tensor, linear: nn.Linear) -> LinearBucket:
    """The bucket of ``linear(x)``."""
    return LinearBucket(*_bucket_key(x, linear.weight, linear.bias))


def _bucket_key(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> tuple[int, int, int, bool, int]:
    rows = x.numel() // max(x.shape[-1], 1)
    return _pow2(rows), weight.shape[1], weight.shape[0], bias is not None, torch.get_num_threads()


def time_candidates(candidates: dict[str, Callable[[], object]], bucket: LinearBucket) -> dict[str, float]:
    """Median seconds per call of each candidate, run in alternation after a warm-up: ``REPEATS`` rounds, and
    more (up to ``MAX_REPEATS``) while they have taken under ``MIN_SECONDS``, so that tiny shapes are not
    decided by one burst of noise.

    Looked up at call time, so a test can replace it (``monkeypatch.setattr``) to force a winner."""
    for fn in candidates.values():
        for _ in range(WARMUP):  # lazy initialisation, allocator growth, the oneDNN weight pack
            fn()
    times: dict[str, list[float]] = {name: [] for name in candidates}
    began = time.perf_counter()
    for round_ in range(MAX_REPEATS):
        if round_ >= REPEATS and time.perf_counter() - began >= MIN_SECONDS:
            break
        for name, fn in candidates.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def _pow2(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


def _onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """oneDNN's linear on prepacked weights (module-level so tests can count its calls)."""
    return torch._C._nn.mkldnn_linear(x.contiguous().to_mkldnn(), weight, bias).to_dense()


class _MeasuredForward:
    """A replacement ``forward`` for one linear: the measured winner of its bucket, ``F.linear`` otherwise."""

    def __init__(self, linear: nn.Linear) -> None:
        self.linear = linear
        self._packed: tuple[torch.Tensor, torch.Tensor | None] | None = None
        self._packed_from: tuple[tuple[int, int], ...] = ()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        # Runs on every linear call, so it stays cheap: a few attribute reads and one dict lookup.
        weight, bias = self._weight_and_bias()
        if not self._eligible(x, weight, bias):
            return F.linear(x, weight, bias)
        key = _bucket_key(x, weight, bias)
        choice = _CHOICES.get(key)  # a plain tuple equals, and hashes as, its LinearBucket
        if choice is None:
            choice = self._measure(x, LinearBucket(*key))
        if choice.path == ONEDNN:
            return self._onednn(x)
        return F.linear(x, weight, bias)

    def _weight_and_bias(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        params = self.linear._parameters  # nn.Module.__getattr__ costs about as much as the rest of the call
        weight = params.get("weight")
        if weight is not None and "bias" in params:
            return weight, params["bias"]
        return self.linear.weight, self.linear.bias  # e.g. a parametrized weight

    @staticmethod
    def _eligible(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> bool:
        if torch.compiler.is_compiling() or not onednn_available():
            return False
        if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad)):
            return False
        if not (x.is_cpu and weight.is_cpu and x.dtype is torch.float32 and weight.dtype is torch.float32):
            return False
        return (bias is None or (bias.is_cpu and bias.dtype is torch.float32)) and x.numel() > 0

    def _measure(self, x: torch.Tensor, bucket: LinearBucket) -> LinearChoice:
        weight, bias = self._weight_and_bias()
        had_pack = self._packed is not None
        candidates: dict[str, Callable[[], object]] = {
            F_LINEAR: lambda: F.linear(x, weight, bias),
            ONEDNN: lambda: self._onednn(x),
        }
        # Timing must not change what the caller computes or draws: no autograd, the RNG state left as it was.
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            seconds = time_candidates(candidates, bucket)
        faster = seconds[ONEDNN] < ONEDNN_MARGIN * seconds[F_LINEAR]
        choice = LinearChoice(ONEDNN if faster else F_LINEAR, dict(seconds))
        _CHOICES[bucket] = choice
        if choice.path == F_LINEAR and not had_pack:
            self._packed, self._packed_from = None, ()  # keep no weight copy that nothing uses
        log.info("CPU linear for %s: %s (median seconds %s)", bucket, choice.path, seconds)
        return choice

    def _onednn(self, x: torch.Tensor) -> torch.Tensor:
        packed_weight, packed_bias = self._packed_weights()
        return _onednn_linear(x, packed_weight, packed_bias)

    def _packed_weights(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        weight, bias = self._weight_and_bias()
        # Repack when a weight was replaced (data pointer) or modified in place (version counter; inference
        # tensors have none, and cannot be modified outside inference mode anyway).
        source = tuple((t.data_ptr(), 0 if t.is_inference() else t._version) for t in (weight, bias) if t is not None)
        if self._packed is None or source != self._packed_from:
            self._packed = (
                weight.detach().to_mkldnn(),
                bias.detach().to_mkldnn() if bias is not None else None,
            )
            self._packed_from = source
        return self._packed
