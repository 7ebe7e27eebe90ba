"""Spine benchmark: attention kernels (manual vs sdpa) and llama-55m forward latency vs Hugging Face.

    python benchmarks/bench_spine.py [--repeats 20] [--write BENCHMARKS.md]

Both comparisons run in one process, alternating the contenders on every repeat so that machine noise hits
them alike; figures are medians, and ratios are ours / theirs (below 1.0 means we are faster). With
``--write`` the results replace the ``spine`` section of BENCHMARKS.md. Needs ``transformers`` (dev extra).
"""

from __future__ import annotations

import argparse
import datetime as dt
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


def interleaved_medians(contenders: dict[str, Callable[[], object]], repeats: int, warmup: int = 3) -> dict[str, float]:
    """Median seconds per call of each contender, timed in alternation."""
    for fn in contenders.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
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


def bench_llama_forward(repeats: int) -> tuple[dict[str, float], dict[str, float]]:
    """Forward latency of llama-55m at batch 1 x 128 tokens, ours (eager and with oneDNN linears) vs
    transformers.LlamaForCausalLM on the same weights; returns the medians and the max logit differences."""
    import tempfile

    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    cfg = specs.load_config("llama-55m")
    ours = model.build(cfg).eval()
    with tempfile.TemporaryDirectory() as tmp:
        model.to_hf(ours, Path(tmp) / "hf")
        theirs = AutoModelForCausalLM.from_pretrained(Path(tmp) / "hf", dtype=torch.float32).eval()
    onednn = model.build(cfg, init=False).eval()
    onednn.load_state_dict(ours.state_dict())
    model.enable_onednn_linears(onednn)
    ids = torch.randint(0, cfg.vocab_size, (1, 128))
    with torch.inference_mode():
        reference = theirs(ids).logits
        diffs = {name: (m(ids) - reference).abs().max().item() for name, m in (("lmplanes", ours), ("onednn", onednn))}
        medians = interleaved_medians(
            {"lmplanes": lambda: ours(ids), "onednn": lambda: onednn(ids), "transformers": lambda: theirs(ids)},
            repeats,
        )
    return medians, diffs


def report(attn: dict[str, float], llama: dict[str, float], diffs: dict[str, float], repeats: int) -> str:
    import transformers

    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")
    cpu = cpu_name()
    return "\n".join(
        [
            START,
            "## Spine: attention kernels and llama-55m forward (CPU)",
            "",
            f"Command: `python benchmarks/bench_spine.py --repeats {repeats} --write BENCHMARKS.md`  ",
            f"Machine: {cpu}, {os.cpu_count()} cores, torch {torch.__version__}, transformers {transformers.__version__}, "
            f"Python {platform.python_version()}, {when}. Medians of {repeats} interleaved repeats.",
            "",
            "| benchmark | lmplanes | peer | ratio (ours / peer) |",
            "| --- | --- | --- | --- |",
            f"| attention fwd+bwd, B=4 H=8 T=512 D=64 fp32 causal: `sdpa` vs `manual` | "
            f"{attn['sdpa'] * 1e3:.1f} ms (sdpa) | {attn['manual'] * 1e3:.1f} ms (manual) | "
            f"{attn['sdpa'] / attn['manual']:.2f} |",
            f"| llama-55m forward, 1 x 128 tokens fp32, eager vs `LlamaForCausalLM` (sdpa) | "
            f"{llama['lmplanes'] * 1e3:.1f} ms | {llama['transformers'] * 1e3:.1f} ms | "
            f"{llama['lmplanes'] / llama['transformers']:.2f} |",
            f"| the same with `model.enable_onednn_linears` (CPU inference) | {llama['onednn'] * 1e3:.1f} ms | "
            f"{llama['transformers'] * 1e3:.1f} ms | {llama['onednn'] / llama['transformers']:.2f} |",
            "",
            "Same weights in all models (exported with `model.to_hf`); max |logit difference| from transformers: "
            f"{diffs['lmplanes']:.1e} eager, {diffs['onednn']:.1e} with oneDNN linears. Eager, both models spend over 90% "
            "of the forward in the same MKL GEMMs (torch.profiler), so the eager ratio stays near 1 and moves by a few percent "
            "between runs; on this AMD "
            "CPU oneDNN's GEMM is about 2x faster than MKL's, which is what `enable_onednn_linears` buys.",
            END,
        ]
    )


def cpu_name() -> str:
    """The processor's marketing name where Linux tells it, else the architecture."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def write_section(path: Path, section: str) -> None:
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    if START in text and END in text:
        head, rest = text.split(START, 1)
        text = head + section + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--write", type=Path, default=None, help="replace the spine section of this markdown file")
    args = parser.parse_args(argv)
    attn = bench_attention(args.repeats)
    llama, diffs = bench_llama_forward(args.repeats)
    section = report(attn, llama, diffs, args.repeats)
    print(section)
    if args.write is not None:
        write_section(args.write, section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
