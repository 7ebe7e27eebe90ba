"""The performance harness: its arithmetic on made-up measurements (every formula by hand), and one real tiny
run whose figures must be present, positive and consistent with each other."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import model
import specs
from eval.perf import decode_weight_bytes, run_perf
from eval.perf_report import Measured, PerfReport, percentile, summarize


def _measured(**changes) -> Measured:
    fields = dict(
        device="cpu", dtype="float32", batch=2, prompt_tokens=10, new_tokens=4, ttft_s=0.5, step_s=[0.1, 0.2, 0.3],
        prefill_flops=4e9, decode_flops=2e8, weight_bytes=1000, kv_bytes_per_token=8, bandwidth=1e4,
        peak_flops=1e11, peak_flops_source="declared", peak_memory_bytes=123, peak_memory_kind="peak RSS",
    )
    return Measured(**{**fields, **changes})


def test_the_arithmetic_on_made_up_numbers() -> None:
    r = summarize(_measured())
    assert r.ttft_ms == pytest.approx(500)
    assert r.prefill_tokens_per_s == pytest.approx(2 * 10 / 0.5)
    assert r.decode_tokens_per_s == pytest.approx(2 * 3 / 0.6)
    assert (r.token_latency_ms_p50, r.token_latency_ms_mean) == (pytest.approx(200), pytest.approx(200))
    assert r.token_latency_ms_p90 == pytest.approx(280)  # 0.2 + 0.8 * (0.3 - 0.2)
    assert r.mfu_prefill == pytest.approx(4e9 / 0.5 / 1e11)
    assert r.mfu_decode == pytest.approx(2e8 / 0.2 / 1e11)
    # three steps over 11, 12 and 13 cached tokens per row: 3 * 1000 weight bytes + 2 rows * 8 bytes * 36 tokens
    decode_bytes = 3 * 1000 + 2 * 8 * 36
    assert r.decode_bytes_per_step == pytest.approx(decode_bytes / 3)
    assert r.decode_bandwidth_fraction == pytest.approx(decode_bytes / 1e4 / 0.6)
    assert (r.peak_memory_bytes, r.peak_flops_source) == (123, "declared")


@pytest.mark.parametrize("q", [0, 13, 50, 90, 99, 100])
def test_percentiles_are_numpys(q: float) -> None:
    values = list(np.random.default_rng(1).exponential(size=37))
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_json_and_markdown() -> None:
    r = summarize(_measured())
    assert json.loads(json.dumps(r.as_dict()))["decode_tokens_per_s"] == pytest.approx(10)
    table = r.markdown().splitlines()
    assert table[0] == "| figure | value |" and len(table) == 2 + len(r.as_dict())
    assert "| mfu_prefill | 8.00% |" in table


def test_decode_weight_bytes_leaves_out_lookup_tables_but_not_a_tied_head() -> None:
    base = specs.load_preset("llama-tiny")
    untied = model.build(base)
    tied = model.build(specs.apply_overrides(base, ["tie_embeddings=true"]))
    total = sum(p.numel() * 4 for p in untied.parameters())
    assert decode_weight_bytes(untied) == total - base.vocab_size * base.d_model * 4
    assert decode_weight_bytes(tied) == sum(p.numel() * 4 for p in tied.parameters())  # the shared table, once


def test_a_real_tiny_run_gives_sane_figures() -> None:
    torch.manual_seed(0)
    lm = model.build(specs.load_preset("llama-tiny")).eval()
    r = run_perf(lm, prompt_tokens=16, new_tokens=6, batch=2)
    assert isinstance(r, PerfReport)
    assert (r.batch, r.prompt_tokens, r.new_tokens, r.device, r.dtype) == (2, 16, 6, "cpu", "float32")
    figures = r.as_dict()
    for name in ("ttft_ms", "prefill_tokens_per_s", "decode_tokens_per_s", "peak_memory_bytes", "mfu_prefill",
                 "mfu_decode", "peak_flops", "bandwidth_bytes_per_s", "decode_bandwidth_fraction"):
        assert math.isfinite(figures[name]) and figures[name] > 0, name
    assert r.token_latency_ms_p50 <= r.token_latency_ms_p90 <= r.token_latency_ms_p99
    assert 0 < r.mfu_prefill < 1 and 0 < r.decode_bandwidth_fraction < 1  # no run beats the machine's limits
    assert r.peak_flops_source == "measured"
    assert run_perf(lm, prompt_tokens=4, new_tokens=2, peak_flops=1e12).peak_flops == 1e12


def test_refuses_runs_past_the_context() -> None:
    lm = model.build(specs.load_preset("llama-tiny"))
    with pytest.raises(ValueError, match="context"):
        run_perf(lm, prompt_tokens=100, new_tokens=40)
