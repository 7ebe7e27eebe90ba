"""Attention kernels by name: ``register`` declares, ``resolve`` chooses, ``explain`` says why not.

Registering a kernel never selects it. A kernel may be registered as a ``"module:function"`` string, imported
only when first resolved, so optional back-ends (Triton) cost nothing on machines without them.

``resolve("auto", call)`` picks the fastest kernel whose capabilities cover the call. The choice is measured
(each candidate run on copies of the call's tensors, forward and, when the call needs gradients, backward) the
first time a shape bucket is seen on a device, then cached in memory and on disk (:mod:`kernel.auto_cache`, so
the next process reuses it); :func:`auto_choices` shows what was picked. :func:`use_kernel` makes ``"auto"``
resolve to one kernel inside a ``with`` block and restores the previous behaviour on exit.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import importlib
import logging
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from kernel import auto_cache
from specs.attention import AttentionCall, AttentionKernel, KernelCaps
from specs.kernel_names import AUTO, forget_kernel_name, register_kernel_name

log = logging.getLogger(__name__)


class KernelUnavailable(ValueError):
    """No kernel (or not the named one) can serve an attention call; the message says why."""


@dataclass
class _Entry:
    target: AttentionKernel | str  # the kernel, or "module:function" to import on first use
    caps: KernelCaps
    preference: int = 0
    load_error: str | None = None


_KERNELS: dict[str, _Entry] = {}
_AUTO_CHOICES: dict[tuple, str] = {}
# The pin of use_kernel: per thread and per asyncio task, so concurrent requests of a server never see each
# other's pins.
_forced: contextvars.ContextVar[str | None] = contextvars.ContextVar("lmplanes_forced_kernel", default=None)


def register(
    name: str, fn: AttentionKernel | str, caps: KernelCaps, *, preference: int = 0, replace: bool = False
) -> None:
    """Declare kernel ``name`` with capabilities ``caps``. ``fn`` may be a ``"module:function"`` string.

    ``preference`` orders the capable kernels only where ``"auto"`` cannot time them (while ``torch.compile``
    traces); higher goes first, ties in registration order.
    """
    if name == AUTO:
        raise ValueError(f"{AUTO!r} is reserved for automatic selection")
    if name in _KERNELS and not replace:
        raise ValueError(f"kernel {name!r} is already registered; pass replace=True to override it")
    _KERNELS[name] = _Entry(fn, caps, preference)
    register_kernel_name(name)
    _AUTO_CHOICES.clear()


def unregister(name: str) -> None:
    """Remove a kernel (tests and plugins that register temporary kernels use this)."""
    _KERNELS.pop(name, None)
    forget_kernel_name(name)
    _AUTO_CHOICES.clear()


def available() -> list[str]:
    """Registered kernel names, in registration order."""
    return list(_KERNELS)


def capabilities(name: str) -> KernelCaps:
    return _entry(name).caps


def explain(name: str, call: AttentionCall) -> list[str]:
    """The reasons kernel ``name`` cannot serve ``call``; an empty list means it can."""
    entry = _entry(name)
    reasons = [f"lacks {need}" for need in entry.caps.missing(call)]
    if not reasons and _load(name, entry) is None:
        reasons.append(f"cannot be loaded: {entry.load_error}")
    return reasons


@torch.compiler.assume_constant_result
def _pinned() -> str | None:
    """The kernel :func:`use_kernel` pinned in this context. Read at trace time under ``torch.compile``
    (a ContextVar cannot be traced), so a compiled model keeps the pin it was compiled with."""
    return _forced.get()


def can_serve(name: str, call: AttentionCall) -> bool:
    """Whether :func:`resolve` would find a kernel for ``call`` (for ``"auto"``: any capable kernel, or the pinned
    one inside :func:`use_kernel`)."""
    if name == AUTO:
        forced = _pinned()
        return not explain(forced, call) if forced is not None else any(not explain(n, call) for n in _KERNELS)
    return not explain(name, call)


def resolve(name: str, call: AttentionCall) -> AttentionKernel:
    """The kernel to run ``call``: ``name`` itself (checked), or for ``"auto"`` the fastest capable one."""
    if name == AUTO:
        return _resolve_auto(call)
    reasons = explain(name, call)
    if reasons:
        able = [other for other in _KERNELS if other != name and not explain(other, call)]
        raise KernelUnavailable(
            f"kernel {name!r} cannot serve this attention call: {'; '.join(reasons)}. "
            f"Kernels that can: {', '.join(able) if able else 'none'}"
        )
    return _loaded(name)


@contextlib.contextmanager
def use_kernel(name: str) -> Iterator[None]:
    """Inside the block, ``"auto"`` resolves to ``name`` (and fails loudly if ``name`` cannot serve a call)."""
    _entry(name)
    token = _forced.set(name)
    try:
        yield
    finally:
        _forced.reset(token)


def auto_choices() -> dict[tuple, str]:
    """What ``"auto"`` picked, per shape bucket (see :func:`shape_bucket`)."""
    return dict(_AUTO_CHOICES)


def clear_auto_choices() -> None:
    _AUTO_CHOICES.clear()


def shape_bucket(call: AttentionCall) -> tuple:
    """Calls in the same bucket share an ``"auto"`` choice: sequence lengths are rounded up to powers of two,
    and every capability the call needs is part of the key (the same list ``KernelCaps.missing`` checks, so a
    choice can never be reused for a call its kernel cannot serve)."""
    q, k = call.q, call.k
    shape = (str(q.device), str(q.dtype), q.shape[1], k.shape[1], q.shape[-1], _pow2(q.shape[2]), _pow2(call.key_len))
    return shape + tuple(sorted(call.features()))


def _pow2(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


def _entry(name: str) -> _Entry:
    if name not in _KERNELS:
        raise KernelUnavailable(f"unknown attention kernel {name!r}; registered: {', '.join(_KERNELS) or 'none'}")
    return _KERNELS[name]


def _load(name: str, entry: _Entry) -> AttentionKernel | None:
    """The kernel, importing a lazy one on first use; None (with ``entry.load_error`` set) when it cannot load."""
    target = entry.target
    if not isinstance(target, str):
        return target
    if entry.load_error is not None:
        return None
    module_name, _, attr = target.partition(":")
    try:
        loaded: AttentionKernel = getattr(importlib.import_module(module_name), attr)
    except Exception as exc:  # a broken optional back-end (driver, toolchain) must not break every other kernel
        entry.load_error = f"{type(exc).__name__}: {exc}"
        log.info("attention kernel %r is unavailable: %s", name, entry.load_error)
        return None
    entry.target = loaded
    return loaded


def _loaded(name: str) -> AttentionKernel:
    entry = _KERNELS[name]
    fn = _load(name, entry)
    if fn is None:
        raise KernelUnavailable(f"attention kernel {name!r} cannot be loaded: {entry.load_error}")
    return fn


def _resolve_auto(call: AttentionCall) -> AttentionKernel:
    forced = _pinned()
    if forced is not None:
        return resolve(forced, call)
    if torch.compiler.is_exporting():
        # An exported program (torch.export, ONNX) runs at every size of its dynamic dims, so no one shape
        # bucket's measurement applies, and computing the bucket would specialise those dims to the example's.
        return _loaded(_preferred([name for name in _KERNELS if not explain(name, call)], call))
    bucket = shape_bucket(call)
    chosen = _AUTO_CHOICES.get(bucket)
    if chosen is None:
        candidates = [name for name in _KERNELS if not explain(name, call)]
        if len(candidates) > 1 and _cannot_time():
            # A guess, not a measurement: used for this trace only and never cached.
            return _loaded(_preferred(candidates, call))
        if not candidates:
            _preferred(candidates, call)  # raises, naming what each kernel lacks
        chosen = candidates[0] if len(candidates) == 1 else _remembered_or_fastest(candidates, call, bucket)
        _AUTO_CHOICES[bucket] = chosen
        log.info("auto attention kernel for %s: %s (candidates: %s)", bucket, chosen, candidates)
    return _loaded(chosen)


def _preferred(candidates: list[str], call: AttentionCall) -> str:
    """The capable kernel with the highest registered preference; raises when there is none."""
    if not candidates:
        details = "; ".join(f"{n}: {', '.join(explain(n, call))}" for n in _KERNELS)
        raise KernelUnavailable(f"no registered attention kernel can serve this call ({details})")
    return max(candidates, key=lambda n: _KERNELS[n].preference)


def _remembered_or_fastest(candidates: list[str], call: AttentionCall, bucket: tuple) -> str:
    """The choice an earlier process measured for this machine, bucket and candidate set (only if it is still a
    candidate), else a fresh measurement, written down for the next process."""
    key = auto_cache.choice_key(bucket, candidates, call.q.device)
    chosen = auto_cache.remembered(key)
    if chosen in candidates:
        return chosen
    chosen = _fastest(candidates, call)
    auto_cache.remember(key, chosen)
    return chosen


def _cannot_time() -> bool:
    """Timing is impossible while tracing for compilation; the first capable kernel is used instead."""
    return torch.compiler.is_compiling()


def _fastest(candidates: list[str], call: AttentionCall, repeats: int = 3) -> str:
    """The candidate that runs ``call`` fastest: the forward alone for inference, and forward plus backward when
    the call needs gradients (a kernel can be quick forward and slow backward, e.g. SDPA's bfloat16 backward on
    some CPUs), on detached copies of the call's tensors."""
    backward = call.needs_backward
    leaves = [t.detach().requires_grad_(backward) for t in (call.q, call.k, call.v)]
    call = dataclasses.replace(call, q=leaves[0], k=leaves[1], v=leaves[2], dropout_p=0.0)
    grad = torch.ones_like(call.q) if backward else None

    def run_time(fn: AttentionKernel) -> float:
        times = []
        for _ in range(repeats + 1):  # the first run warms up (allocations, lazy init, autotuning)
            _synchronize(call)
            start = time.perf_counter()
            out = fn(call)
            if grad is not None:
                out.backward(grad)
            _synchronize(call)
            times.append(time.perf_counter() - start)
        return statistics.median(times[1:])

    # Timing must not change what the caller computes: no dropout draws, the RNG state left as it was,
    # gradients only into the copies, and nothing saved through the caller's saved-tensor hooks (activation
    # checkpointing counts what its forward saves and would see the timing runs; plain hooks shadow it here).
    devices = [call.q.device] if call.q.device.type == "cuda" else []
    with (
        torch.set_grad_enabled(backward),
        torch.random.fork_rng(devices=devices),
        torch.autograd.graph.saved_tensors_hooks(lambda t: t, lambda t: t),
    ):
        timings = {name: run_time(_loaded(name)) for name in candidates}
    return min(timings, key=timings.__getitem__)


def _synchronize(call: AttentionCall) -> None:
    if call.q.device.type == "cuda":
        torch.cuda.synchronize(call.q.device)
