"""The arithmetic of a performance run: from what was measured (times, FLOPs, bytes, the machine's peaks) to the
figures people compare (time to first token, tokens/s, latency percentiles, MFU, fraction of the bandwidth
bound), and their JSON and Markdown forms. No timing happens here, so every formula is tested on made-up
numbers (:mod:`eval.perf` measures).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass


@dataclass(frozen=True, kw_only=True, slots=True)
class Measured:
    """What one generation run measured.

    ``ttft_s``: from the call to the first generated token (the prompt's forward and the first choice).
    ``step_s``: the time of each later decode step (one token for every row). ``prefill_flops``: FLOPs of the
    prompt's forward; ``decode_flops``: of one decode step at the prompt's length (both as
    ``torch.utils.flop_counter`` counts them: matmuls and attention). ``weight_bytes``: weight bytes one decode
    step reads (every weight once; an untied embedding table only a row, so not counted).
    ``kv_bytes_per_token``: cache bytes of one token of one row. ``bandwidth``: streaming-read bytes/s measured
    in the same run; ``peak_flops``: FLOP/s, measured (a matmul) or declared.
    """

    device: str
    dtype: str
    batch: int
    prompt_tokens: int
    new_tokens: int
    ttft_s: float
    step_s: Sequence[float]
    prefill_flops: float
    decode_flops: float
    weight_bytes: int
    kv_bytes_per_token: int
    bandwidth: float
    peak_flops: float
    peak_flops_source: str
    peak_memory_bytes: int
    peak_memory_kind: str


@dataclass(frozen=True, kw_only=True, slots=True)
class PerfReport:
    """The figures of one run (see :func:`summarize` for each formula)."""

    device: str
    dtype: str
    batch: int
    prompt_tokens: int
    new_tokens: int
    ttft_ms: float
    prefill_tokens_per_s: float
    decode_tokens_per_s: float
    token_latency_ms_p50: float
    token_latency_ms_p90: float
    token_latency_ms_p99: float
    token_latency_ms_mean: float
    peak_memory_bytes: int
    peak_memory_kind: str
    mfu_prefill: float
    mfu_decode: float
    peak_flops: float
    peak_flops_source: str
    decode_bytes_per_step: float
    bandwidth_bytes_per_s: float
    decode_bandwidth_fraction: float

    def as_dict(self) -> dict[str, float | int | str]:
        return asdict(self)

    def markdown(self) -> str:
        """A two-column Markdown table, one figure a row."""
        rows = [("figure", "value"), ("---", "---:")]
        rows += [(name, _format(name, value)) for name, value in self.as_dict().items()]
        return "\n".join(f"| {a} | {b} |" for a, b in rows) + "\n"


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation between order statistics (numpy's default)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarize(m: Measured) -> PerfReport:
    """Prefill tokens/s: ``batch * prompt / ttft``. Decode tokens/s: ``batch * steps / sum(step_s)`` (the first
    token belongs to the prefill). Latencies are per decode step. MFU: achieved FLOP/s over the peak, the
    prefill's over the time to first token, a step's over the mean step. Bandwidth fraction: the time the
    decode steps would take if each only streamed its bytes (the weights, plus the cache of every row up to
    that step: ``prompt + i`` tokens at step ``i``) at the measured bandwidth, over the time they took; 1 is
    the memory-bandwidth bound."""
    steps = len(m.step_s)
    decode_time = sum(m.step_s)
    mean_step = decode_time / steps if steps else math.nan
    # Step i (1-based: the first token came with the prefill) attends over prompt + i cached tokens per row.
    cache_tokens = sum(m.prompt_tokens + i for i in range(1, steps + 1))
    decode_bytes = steps * m.weight_bytes + m.batch * m.kv_bytes_per_token * cache_tokens
    bound_time = decode_bytes / m.bandwidth
    return PerfReport(
        device=m.device,
        dtype=m.dtype,
        batch=m.batch,
        prompt_tokens=m.prompt_tokens,
        new_tokens=m.new_tokens,
        ttft_ms=m.ttft_s * 1e3,
        prefill_tokens_per_s=m.batch * m.prompt_tokens / m.ttft_s,
        decode_tokens_per_s=m.batch * steps / decode_time if steps else math.nan,
        token_latency_ms_p50=percentile(m.step_s, 50) * 1e3,
        token_latency_ms_p90=percentile(m.step_s, 90) * 1e3,
        token_latency_ms_p99=percentile(m.step_s, 99) * 1e3,
        token_latency_ms_mean=mean_step * 1e3,
        peak_memory_bytes=m.peak_memory_bytes,
        peak_memory_kind=m.peak_memory_kind,
        mfu_prefill=m.prefill_flops / m.ttft_s / m.peak_flops,
        mfu_decode=m.decode_flops / mean_step / m.peak_flops,
        peak_flops=m.peak_flops,
        peak_flops_source=m.peak_flops_source,
        decode_bytes_per_step=decode_bytes / steps if steps else math.nan,
        bandwidth_bytes_per_s=m.bandwidth,
        decode_bandwidth_fraction=bound_time / decode_time if steps else math.nan,
    )


def _format(name: str, value: float | int | str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return f"{value:,}"
    if name.startswith(("mfu", "decode_bandwidth_fraction")):
        return f"{value:.2%}"
    if name.endswith(("bytes_per_s", "bytes_per_step", "flops")):
        return f"{value:.3e}"
    return f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
