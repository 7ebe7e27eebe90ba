"""Continuous batching against one request at a time, on llama-55m fp32 (CPU).

    python benchmarks/bench_engine.py [--rounds 3] [--requests 16] [--new 64] [--threads N] [--write BENCHMARKS.md]

``--requests`` greedy requests with prompts of different lengths (16, 24, 32, ... tokens, random ids), each
asking for ``--new`` tokens (no eos, so every request runs to the end). Contenders, alternating within every
round so that a slow spell of a shared machine hits both:

* one at a time: ``serve.generate`` on each prompt in turn (its contiguous KV cache, batch 1);
* continuous batching: every request submitted to one ``serve.Engine`` at once (``max_batch`` = the number of
  requests, blocks of 16 tokens), stepped until done.

Reported: total generated tokens/s (prefill included) for each, medians over rounds, the speed-up, and whether
each request's tokens equal its one-at-a-time tokens. A second table isolates what paging costs a decode step:
one batched step of every request at its full prompt length, on a contiguous ``StaticKVCache`` (dense keys)
and on a ``PagedKVCache`` (keys gathered from the pages through the block table, ``tensor.gather_pages``,
which is how attention reads pages while no registered kernel takes a block table).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from bench_spine import cpu_name, interleaved_medians, write_section

import model
import serve
import specs
from specs import GenerationConfig

START, END = "<!-- bench:engine:start -->", "<!-- bench:engine:end -->"
BLOCK = 16


def prompts(n: int, vocab: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(0)
    return [torch.randint(3, vocab, (16 + 8 * i,), generator=g).tolist() for i in range(n)]


def one_at_a_time(lm, requests: list[list[int]], cfg: GenerationConfig) -> list[list[int]]:
    return [serve.generate(lm, torch.tensor([p]), cfg)[0, len(p) :].tolist() for p in requests]


def batched(lm, requests: list[list[int]], cfg: GenerationConfig, max_len: int) -> list[list[int]]:
    engine = serve.Engine(lm, max_batch=len(requests), max_len=max_len, block_size=BLOCK)
    ids = [engine.submit(p, cfg) for p in requests]
    out: dict[int, list[int]] = {i: [] for i in ids}
    while engine.has_work:
        for event in engine.step():
            out[event.request_id].append(event.token)
    return [out[i] for i in ids]


def bench_throughput(lm, args: argparse.Namespace) -> dict:
    requests = prompts(args.requests, lm.config.vocab_size)
    cfg = GenerationConfig(max_new_tokens=args.new)
    max_len = max(map(len, requests)) + args.new
    contenders: dict[str, Callable[[], list[list[int]]]] = {
        "one at a time (serve.generate)": lambda: one_at_a_time(lm, requests, cfg),
        "continuous batching (serve.Engine)": lambda: batched(lm, requests, cfg, max_len),
    }
    warm = GenerationConfig(max_new_tokens=min(4, args.new))
    one_at_a_time(lm, requests[:2], warm)  # warm-up (allocator, oneDNN primitive caches), short
    batched(lm, requests[:2], warm, max_len)
    times: dict[str, list[float]] = {name: [] for name in contenders}
    outputs: dict[str, list[list[int]]] = {}
    for r in range(args.rounds):
        names = list(contenders)
        for name in names[r % 2 :] + names[: r % 2]:  # each goes first as often
            start = time.perf_counter()
            outputs[name] = contenders[name]()
            times[name].append(time.perf_counter() - start)
    tokens = args.requests * args.new
    reference, ours = outputs.values()
    return {
        "rate": {name: tokens / statistics.median(ts) for name, ts in times.items()},
        "rates": {name: [tokens / t for t in ts] for name, ts in times.items()},
        "equal": sum(a == b for a, b in zip(reference, ours)),
        "prompt_lens": (len(requests[0]), len(requests[-1])),
    }


def bench_paging(lm, args: argparse.Namespace) -> dict[str, float]:
    """Seconds per batched decode step (every request at its prompt's length), contiguous vs paged cache."""
    requests = prompts(args.requests, lm.config.vocab_size)
    width = max(map(len, requests))
    caches = {
        "contiguous (StaticKVCache)": lm.new_cache(len(requests), width + 1),
        "paged (PagedKVCache, gather)": lm.new_cache(len(requests), width + 1, paged=specs.PagedSpec(block_size=BLOCK)),
    }
    padded = torch.zeros(len(requests), width, dtype=torch.long)
    for b, p in enumerate(requests):
        padded[b, : len(p)] = torch.tensor(p)
    rollback = torch.tensor([width - len(p) for p in requests])
    token = torch.zeros(len(requests), 1, dtype=torch.long)

    def step(cache) -> Callable[[], None]:
        with torch.no_grad():  # the prompts, right-padded then rolled back to each row's length
            lm(padded, cache=cache)
        cache.evict(rollback)

        def run() -> None:
            with torch.no_grad():
                lm(token, cache=cache)
            cache.evict(1)

        return run

    return interleaved_medians({name: step(cache) for name, cache in caches.items()}, args.rounds * 10)


def report(throughput: dict, paging: dict[str, float], args: argparse.Namespace, command: str) -> str:
    serial, batch = throughput["rate"].items()
    low, high = throughput["prompt_lens"]
    contiguous, paged = paging.values()
    return "\n".join(
        [
            START,
            "## Serve: continuous batching vs one request at a time, llama-55m fp32 (CPU)",
            "",
            f"Command: `python benchmarks/bench_engine.py {command}`  ",
            f"Machine: {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} "
            f"threads), Python {platform.python_version()}, {dt.date.today()}. {args.requests} greedy requests, "
            f"prompts of {low} to {high} random tokens, {args.new} new tokens each; medians of {args.rounds} "
            "rounds, contenders alternating.",
            "",
            "| contender | total tokens/s (prefill included) | speed-up |",
            "| --- | --- | --- |",
            f"| {serial[0]} | {serial[1]:.1f} | 1.00x |",
            f"| {batch[0]} | {batch[1]:.1f} | {batch[1] / serial[1]:.2f}x |",
            "",
            f"Requests whose tokens equal their one-at-a-time tokens: {throughput['equal']} of {args.requests}. "
            "Per-round tokens/s: " + "; ".join(
                f"{name}: " + ", ".join(f"{v:.0f}" for v in values) for name, values in throughput["rates"].items()
            ) + ".",
            "",
            f"What paging costs one batched decode step ({args.requests} rows at their prompt lengths, blocks of "
            f"{BLOCK}): contiguous cache {contiguous * 1e3:.1f} ms, paged cache {paged * 1e3:.1f} ms "
            f"({paged / contiguous:.2f}x; attention reads the pages through a gather).",
            END,
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--new", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads (default: torch's)")
    parser.add_argument("--write", type=Path, default=None, help="replace the engine section of this markdown file")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    lm = model.build(specs.load_preset("llama-55m")).eval()
    throughput = bench_throughput(lm, args)
    paging = bench_paging(lm, args)
    command = f"--rounds {args.rounds} --requests {args.requests} --new {args.new}"
    command += (f" --threads {args.threads}" if args.threads else "") + (f" --write {args.write}" if args.write else "")
    section = report(throughput, paging, args, command)
    print(section)
    if args.write:
        write_section(args.write, section, START, END)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
