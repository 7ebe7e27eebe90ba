"""Spine benchmark: attention kernels (manual vs sdpa); llama-55m prefill latency and batch-1 decode speed vs
Hugging Face, eager and with ``model.enable_measured_cpu_linears``.

    python benchmarks/bench_spine.py [--repeats 20] [--threads N] [--write BENCHMARKS.md]

Both comparisons run in one process, alternating the contenders on every repeat so that machine noise hits
them alike; figures are medians, and ratios are ours / theirs (below 1.0 means we are faster). With
``--write`` the results replace the ``spine`` section of BENCHMARKS.md. Needs ``transformers`` (dev extra).
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

import kernel
import model
import specs
from specs.attention import AttentionCall

START, END = "<!-- bench:spine:start -->", "<!-- bench:spine:end -->"


def interleaved_medians(
    contenders: dict[str, Callable[[], object]], repeats: int, warmup: int = 3, self_timed: bool = False
) -> dict[str, float]:
    """Median seconds per call of each contender, timed in alternation, the order rotating. With ``self_timed``
    each call returns the seconds to count (so that untimed setup, such as a decode's prompt, can run inside it)."""
    for fn in contenders.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    names = list(contenders)
    for i in range(repeats):
        for name in names[i % len(names) :] + names[: i % len(names)]:  # each goes first as often: no order bias
            fn = contenders[name]
            start = time.perf_counter()
            result = fn()
            times[name].append(float(result) if self_timed else time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def bench_attention(repeats: int) -> dict[str, float]:
    """Forward + backward of one causal attention call, B=4, H=8, T=512, D=64, fp32."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(4, 8, 512, 64, requires_grad=True) for _ in range(3))
    grad = torch.randn(4, 8, 512, 64)

    def run(name: str) -> Callable[[], None]:
        fn = kernel.registry.resolve(name, AttentionCall(q=q, k=k, v=v, causal=True))

        def step() -> None:
            q.grad = k.grad = v.grad = None
            fn(AttentionCall(q=q, k=k, v=v, causal=True)).backward(grad)

        return step

    return interleaved_medians({"manual": run("manual"), "sdpa": run("sdpa")}, repeats)


PREFILL, PROMPT, NEW_TOKENS = 128, 64, 64
CONTENDERS = ("lmplanes", "measured", "transformers")


def bench_llama(repeats: int) -> tuple[dict[str, float], dict[str, float], dict[str, float], dict]:
    """llama-55m, batch 1, fp32: prefill latency (1 x 128 tokens into an empty KV cache) and decode speed
    (64 tokens fed one at a time with the KV cache after a 64-token prompt), for ours eager, ours with
    ``model.enable_measured_cpu_linears`` and ``transformers.LlamaForCausalLM`` on the same weights.

    Returns prefill medians (s), decode medians (s per token), max |logit difference| from transformers over
    every prefill and decode logit, and the linear decisions the measured model made."""
    import tempfile

    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    cfg = specs.load_config("llama-55m")
    ours = model.build(cfg).eval()
    with tempfile.TemporaryDirectory() as tmp:
        model.to_hf(ours, Path(tmp) / "hf")
        theirs = AutoModelForCausalLM.from_pretrained(Path(tmp) / "hf", dtype=torch.float32).eval()
    measured = model.build(cfg, init=False).eval()
    measured.load_state_dict(ours.state_dict())
    model.clear_linear_choices()
    model.enable_measured_cpu_linears(measured)
    prefill_ids = torch.randint(0, cfg.vocab_size, (1, PREFILL))
    tokens = torch.randint(0, cfg.vocab_size, (1, PROMPT + NEW_TOKENS))  # fed as given: the same work for all
    runners = {"lmplanes": _ours(ours), "measured": _ours(measured), "transformers": _theirs(theirs)}
    with torch.inference_mode():
        reference = [runners["transformers"](prefill_ids, PREFILL), *_decode_logits(runners["transformers"], tokens)]
        diffs = {}
        for name in ("lmplanes", "measured"):
            logits = [runners[name](prefill_ids, PREFILL), *_decode_logits(runners[name], tokens)]
            diffs[name] = max((got - want).abs().max().item() for got, want in zip(logits, reference))
        prefill = interleaved_medians({n: functools.partial(runners[n], prefill_ids, PREFILL) for n in CONTENDERS}, repeats)
        decode = interleaved_medians(
            {n: functools.partial(_timed_decode, runners[n], tokens) for n in CONTENDERS}, repeats, self_timed=True
        )
    per_token = {name: seconds / NEW_TOKENS for name, seconds in decode.items()}
    return prefill, per_token, diffs, model.linear_choices()


def _ours(m: torch.nn.Module) -> Callable[..., torch.Tensor]:
    """``run(ids, max_len)`` starts a sequence (a fresh KV cache); ``run(ids)`` continues it."""
    state: dict = {}

    def run(ids: torch.Tensor, max_len: int | None = None) -> torch.Tensor:
        if max_len is not None:
            state["cache"] = m.new_cache(ids.shape[0], max_len)
        return m(ids, cache=state["cache"])

    return run


def _theirs(m: torch.nn.Module) -> Callable[..., torch.Tensor]:
    """The same for transformers: a per-token forward with its default ``DynamicCache``, no ``generate``."""
    import inspect

    from transformers import DynamicCache

    # Recent transformers releases name the argument ``cache``, older ones ``past_key_values``.
    key = "cache" if "cache" in inspect.signature(m.forward).parameters else "past_key_values"
    state: dict = {}

    def run(ids: torch.Tensor, max_len: int | None = None) -> torch.Tensor:
        if max_len is not None:
            state["cache"] = DynamicCache(config=m.config)
        return m(ids, use_cache=True, **{key: state["cache"]}).logits

    return run


def _decode_logits(run: Callable[..., torch.Tensor], tokens: torch.Tensor) -> list[torch.Tensor]:
    logits = [run(tokens[:, :PROMPT], PROMPT + NEW_TOKENS)]
    logits += [run(tokens[:, t : t + 1]) for t in range(PROMPT, PROMPT + NEW_TOKENS)]
    return logits


def _timed_decode(run: Callable[..., torch.Tensor], tokens: torch.Tensor) -> float:
    """Seconds for the NEW_TOKENS single-token steps; the prompt's prefill is not counted."""
    run(tokens[:, :PROMPT], PROMPT + NEW_TOKENS)
    start = time.perf_counter()
    for t in range(PROMPT, PROMPT + NEW_TOKENS):
        run(tokens[:, t : t + 1])
    return time.perf_counter() - start


def report(
    attn: dict[str, float],
    prefill: dict[str, float],
    per_token: dict[str, float],
    diffs: dict[str, float],
    choices: dict,
    repeats: int,
    command: str,
) -> str:
    import transformers

    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")
    cpu = cpu_name()
    hf = "`LlamaForCausalLM` (sdpa)"
    rows = [
        f"| attention fwd+bwd, B=4 H=8 T=512 D=64 fp32 causal: `sdpa` vs `manual` | "
        f"{attn['sdpa'] * 1e3:.1f} ms (sdpa) | {attn['manual'] * 1e3:.1f} ms (manual) | "
        f"{attn['sdpa'] / attn['manual']:.2f} |",
    ]
    for name, label in (("lmplanes", "eager"), ("measured", "`enable_measured_cpu_linears`")):
        rows.append(
            f"| llama-55m prefill, 1 x {PREFILL} tokens fp32, {label} vs {hf} | {prefill[name] * 1e3:.1f} ms | "
            f"{prefill['transformers'] * 1e3:.1f} ms | {prefill[name] / prefill['transformers']:.2f} |"
        )
    for name, label in (("lmplanes", "eager"), ("measured", "`enable_measured_cpu_linears`")):
        rows.append(
            f"| llama-55m decode, batch 1, {NEW_TOKENS} tokens after a {PROMPT}-token prompt, KV cache, {label} vs "
            f"{hf} + `DynamicCache` | {1 / per_token[name]:.1f} tok/s | {1 / per_token['transformers']:.1f} tok/s | "
            f"{per_token[name] / per_token['transformers']:.2f} |"
        )
    return "\n".join(
        [
            START,
            "## Spine: attention kernels and llama-55m prefill and decode (CPU)",
            "",
            f"Command: `python benchmarks/bench_spine.py {command} --write BENCHMARKS.md`  ",
            f"Machine: {cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"transformers {transformers.__version__}, Python {platform.python_version()}, {when}. "
            f"Medians of {repeats} interleaved repeats.",
            "",
            "| benchmark | lmplanes | peer | ratio (ours / peer, time) |",
            "| --- | --- | --- | --- |",
            *rows,
            "",
            "Same weights in all models (exported with `model.to_hf`). Prefill starts an empty KV cache; decode feeds "
            "the same fixed tokens one at a time, each model with its own cache (ours: `m.new_cache`; transformers: "
            "a per-token forward with `DynamicCache`, no `generate`), and counts only the single-token steps. "
            "Max |logit difference| from transformers over every prefill and decode logit: "
            f"{diffs['lmplanes']:.1e} eager, {diffs['measured']:.1e} with measured linears.",
            "",
            "What `enable_measured_cpu_linears` chose on this machine (per shape bucket: rows rounded up to a power "
            "of two, in -> out features; median oneDNN / `F.linear` time of its one-off measurement):",
            "",
            *describe_choices(choices),
            "",
            "These choices, and the row for the measured linears, hold for this machine only: the decision is made "
            "by measuring, per shape bucket, on the machine at hand.",
            END,
        ]
    )


def describe_choices(choices: dict) -> list[str]:
    """One line per row bucket (which is what separates prefill from decode)."""
    lines = []
    for rows in sorted({bucket.rows for bucket in choices}, reverse=True):
        parts = [
            f"{b.in_features}->{b.out_features}{' +bias' if b.bias else ''}: {c.path} "
            f"({c.seconds['onednn'] / c.seconds['f.linear']:.2f})"
            for b, c in sorted(choices.items())
            if b.rows == rows
        ]
        phase = {PREFILL: "prefill", PROMPT: "decode's prompt", 1: "decode"}.get(rows, "")
        lines.append(f"- rows {rows}{f' ({phase})' if phase else ''}: " + "; ".join(parts))
    return lines


def cpu_name() -> str:
    """The processor's marketing name where Linux tells it, else the architecture."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def write_section(path: Path, section: str, start: str = START, end: str = END) -> None:
    """Replace the part of ``path`` between the ``start`` and ``end`` markers (or append it) with ``section``."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + section + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--write", type=Path, default=None, help="replace the spine section of this markdown file")
    parser.add_argument(
        "--threads", type=int, default=None, help="intra-op threads (default: torch's); 1 is steadier on a shared machine"
    )
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    attn = bench_attention(args.repeats)
    prefill, per_token, diffs, choices = bench_llama(args.repeats)
    command = f"--repeats {args.repeats}" + (f" --threads {args.threads}" if args.threads is not None else "")
    section = report(attn, prefill, per_token, diffs, choices, args.repeats, command)
    print(section)
    if args.write is not None:
        write_section(args.write, section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
