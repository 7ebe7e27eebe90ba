"""Measure a causal LM's generation: time to first token, prefill and decode speed, per-token latencies, peak
memory, model FLOPs utilisation and how close decoding runs to the memory-bandwidth bound.

Decoding is timed through :func:`serve.stream`, the loop ``lmplanes generate`` runs, after one untimed warm-up
generation (kernel choices, allocator). The machine's limits are measured in the same process, just before:
a streaming read of a buffer far larger than the caches (the bandwidth decoding competes for) and a large
matmul in the model's dtype (the FLOP/s peak, unless one is declared, e.g. the data-sheet figure of a GPU).
"""

from __future__ import annotations

import resource
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from eval.perf_report import Measured, PerfReport, summarize
from serve.generate import stream
from specs.generation_config import GenerationConfig
from specs.protocols import CausalLM
from specs.sizing import DTYPE_BYTES, model_sizes

_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


def measure_bandwidth(device: torch.device, *, nbytes: int | None = None, repeats: int = 5) -> float:
    """Bytes/s of the fastest of ``repeats`` full reads (a sum) of a float32 buffer of ``nbytes`` (default
    256 MiB on CPU, 1 GiB on a GPU: far past the caches)."""
    size = nbytes or (1 << 30 if device.type == "cuda" else 1 << 28)
    buffer = torch.ones(size // 4, dtype=torch.float32, device=device)
    best = float("inf")
    for _ in range(repeats + 1):  # the first read also faults the pages in: not counted
        start = _now(device)
        buffer.sum()
        best = min(best, _now(device) - start)
    return buffer.numel() * 4 / best


def measure_peak_flops(device: torch.device, dtype: torch.dtype, *, n: int | None = None, repeats: int = 3) -> float:
    """FLOP/s of the fastest of ``repeats`` ``n x n`` matmuls in ``dtype`` (``2 n^3`` FLOPs each)."""
    n = n or (8192 if device.type == "cuda" else 1024)
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    best = float("inf")
    for _ in range(repeats + 1):  # warm-up first
        start = _now(device)
        a @ b
        best = min(best, _now(device) - start)
    return 2 * n**3 / best


def decode_weight_bytes(lm: torch.nn.Module) -> int:
    """Bytes of the weights one decode step reads: every parameter and buffer once (shared ones once), except
    embedding tables, of which a lookup reads one row. A tied head shares the embedding's weight and counts it
    through its own module."""
    read = {}
    for module in lm.modules():
        if isinstance(module, torch.nn.Embedding):
            continue
        for tensor in (*module.parameters(recurse=False), *module.buffers(recurse=False)):
            read[id(tensor)] = tensor.numel() * tensor.element_size()
    return sum(read.values())


def run_perf(
    lm: CausalLM,
    *,
    prompt_tokens: int = 128,
    new_tokens: int = 64,
    batch: int = 1,
    peak_flops: float | None = None,
    seed: int = 0,
) -> PerfReport:
    """Generate ``new_tokens`` after random prompts of ``prompt_tokens`` for ``batch`` rows, greedily, and report
    (see :class:`eval.perf_report.PerfReport`). ``peak_flops`` (FLOP/s) replaces the measured matmul peak."""
    module: torch.nn.Module = lm  # type: ignore[assignment]
    cfg = lm.config
    if prompt_tokens < 1 or new_tokens < 2 or batch < 1:
        raise ValueError("perf needs a prompt of at least 1 token, at least 2 new tokens and a batch of at least 1")
    if prompt_tokens + new_tokens > cfg.max_seq_len:
        raise ValueError(f"{prompt_tokens} prompt + {new_tokens} new tokens is over the model's context of {cfg.max_seq_len}")
    weight = next(iter(module.parameters()))
    device, dtype = weight.device, weight.dtype
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, cfg.vocab_size, (batch, prompt_tokens), generator=gen).to(device)
    config = GenerationConfig(max_new_tokens=new_tokens)  # greedy, no end-of-sequence: always new_tokens steps

    bandwidth = measure_bandwidth(device)
    source = "declared" if peak_flops else "measured"
    peak = peak_flops or measure_peak_flops(device, dtype)
    prefill_flops, decode_flops = _count_flops(lm, ids)
    _timed_stream(lm, ids[:, : min(8, prompt_tokens)], GenerationConfig(max_new_tokens=2))  # warm-up
    with _peak_memory(device) as peak_memory:
        ttft, steps = _timed_stream(lm, ids, config)
    sizes = model_sizes(cfg)
    kv_per_token = (sizes.kv_cache_bytes_per_token or 0) // DTYPE_BYTES[cfg.dtype] * weight.element_size()
    return summarize(Measured(
        device=str(device), dtype=str(dtype).removeprefix("torch."), batch=batch, prompt_tokens=prompt_tokens,
        new_tokens=new_tokens, ttft_s=ttft, step_s=steps, prefill_flops=prefill_flops, decode_flops=decode_flops,
        weight_bytes=decode_weight_bytes(module), kv_bytes_per_token=kv_per_token, bandwidth=bandwidth,
        peak_flops=peak, peak_flops_source=source, peak_memory_bytes=peak_memory[0], peak_memory_kind=peak_memory[1],
    ))


def _timed_stream(lm: CausalLM, ids: torch.Tensor, config: GenerationConfig) -> tuple[float, list[float]]:
    """Seconds to the first token, and of each later step."""
    device = ids.device
    start = _now(device)
    marks = []
    for token in stream(lm, ids, config):
        token.cpu()  # the token is on the host (what a server would send): the step is done
        marks.append(_now(device))
    return marks[0] - start, [b - a for a, b in zip(marks, marks[1:])]


@torch.no_grad()
def _count_flops(lm: CausalLM, ids: torch.Tensor) -> tuple[float, float]:
    """FLOPs of the prompt's forward into a fresh cache, and of one decode step after it."""
    cache = lm.new_cache(ids.size(0), ids.size(1) + 1, device=ids.device)
    with FlopCounterMode(display=False) as prefill:
        logits = lm(ids, cache=cache)
    with FlopCounterMode(display=False) as step:
        lm(logits[:, -1:].argmax(dim=-1), cache=cache)
    return float(prefill.get_total_flops()), float(step.get_total_flops())


@contextmanager
def _peak_memory(device: torch.device) -> Iterator[list]:
    """Yields ``[bytes, kind]``, filled at exit: the CUDA allocator's peak over the block, or on CPU the
    process's peak resident set (reset at entry where Linux allows, else the peak since the process began)."""
    found: list = [0, ""]
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        yield found
        found[:] = [torch.cuda.max_memory_allocated(device), "cuda max_memory_allocated"]
        return
    try:
        _CLEAR_REFS.write_text("5")  # resets VmHWM, the peak resident set
        kind = "peak RSS"
    except OSError:
        kind = "peak RSS since process start"
    yield found
    found[:] = [_peak_rss(), kind]


def _peak_rss() -> int:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports kilobytes


def _now(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()
