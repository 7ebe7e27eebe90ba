"""Batch-1 decoding against Hugging Face ``generate``, side by side, on llama-55m (same weights in both).

    python benchmarks/bench_decode.py [--rounds 5] [--prompt 128] [--new 128] [--dtypes float32 bfloat16 int8 int4] [--write BENCHMARKS.md]
    python benchmarks/bench_decode.py --gguf SmolLM2-135M-Instruct.Q4_1.gguf [...]
    python benchmarks/bench_decode.py --huge-pages off [...]   # without transparent huge pages (pack.huge_pages)

With ``--gguf FILE`` the model is a real one, dequantized from a llama.cpp file by ``model.from_gguf`` on our
side and by transformers' own GGUF loader on theirs (its own section of the markdown file).

For each dtype: ``serve.generate`` eager, ``serve.generate`` through ``serve.compile_decoding(freeze=True)``
(the weights as constants of the graph, which lets Inductor prepack them for the CPU's matrix kernels), and
``transformers`` ``generate`` (greedy, its default cache, its default attention), with the same random prompt,
``max_new_tokens`` new tokens (``min_new_tokens`` too, so that no contender stops early). Contenders alternate
within every round, so a slow spell of a shared machine hits all of them. Reported per contender, medians over
rounds: time to first token (the prompt's forward and the first pick), decode tokens/s over the remaining
tokens, and the ratio of decode tokens/s to Hugging Face's (above 1.0: lmplanes is faster).

The memory-bandwidth bound: decoding one token reads every weight once (the embedding table aside: one row),
so tokens/s cannot pass ``streaming read bandwidth / weight bytes``; the bandwidth is measured in the same run
(a sum over a 512 MiB tensor with the same threads) and each contender's fraction of the bound is shown.
Outputs are checked to be token for token equal to Hugging Face's in float32 (greedy, same weights).

With ``--gguf FILE`` and ``llama-cpp-python`` installed (built from source: ``pip install llama-cpp-python``),
llama.cpp decodes the same file in its own Q4_1 format (in a process of its own) as one more group, against transformers in float32;
its bound is for the file's bytes.

``int8``: our weights quantized by ``model.quantize_int8`` (weight-only int8 with a scale per output channel,
bf16 activations) against transformers in float32, the reference the serve issue names; its tokens differ
from float32's once quantization moves an argmax, and its bound is for the int8 bytes read. ``int4``: likewise
with ``model.quantize_int4`` (4-bit codes with a bf16 scale and offset per 32 input features, the output head
int8); from a Q4_1 GGUF file these are the file's own 4-bit values (tests/model/test_gguf_smollm2.py).
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from bench_spine import cpu_name, write_section

import model
import serve
import specs
from pack import huge_pages
from specs import GenerationConfig

QUANTIZED = {"int8": model.quantize_int8, "int4": model.quantize_int4}
MARKERS = {False: ("<!-- bench:decode:start -->", "<!-- bench:decode:end -->"),
           True: ("<!-- bench:decode-gguf:start -->", "<!-- bench:decode-gguf:end -->")}


def read_bandwidth(nbytes: int = 512 * 1024 * 1024, repeats: int = 7) -> float:
    """Bytes per second of a read of ``nbytes`` (the median of summing a float32 tensor that size, warmed up): the
    default, 512 MiB, streams from memory; a tensor the size of a model's weights may partly stay in a large
    last-level cache between reads, as the weights do between tokens."""
    x = torch.ones(nbytes // 4)
    x.sum()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        x.sum()
        times.append(time.perf_counter() - start)
    return x.numel() * x.element_size() / statistics.median(times)


def weight_bytes(lm: torch.nn.Module) -> int:
    """Bytes read per decoded token: every parameter (and the int8 weights and scales of a quantized model) but
    the input embedding table (one row of it is read)."""
    embedding = {id(p) for m in lm.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()}
    head = {id(p) for p in lm.output_head().parameters()}
    read = sum(p.numel() * p.element_size() for p in lm.parameters() if id(p) not in embedding or id(p) in head)
    int8 = [b for m in lm.modules() if isinstance(m, model.Int8Linear) for b in m.buffers()]
    int4 = [b for m in lm.modules() if isinstance(m, model.Int4Linear)  # the kernel's copy of the codes, not both
            for b in (m.weight_packed if m.weight_packed is not None else m.weight_int4, m.scales_and_zeros, m.bias)]
    return read + sum(b.numel() * b.element_size() for b in [*int8, *int4] if b is not None)


def time_ours(lm, ids: torch.Tensor, cfg: GenerationConfig) -> tuple[float, float, torch.Tensor]:
    """(time to first token, decode tokens/s after it, the tokens) for one ``serve.stream``."""
    start = time.perf_counter()
    steps = serve.stream(lm, ids, cfg)
    tokens = [next(steps)]
    first = time.perf_counter()
    tokens.extend(steps)
    end = time.perf_counter()
    return first - start, (len(tokens) - 1) / (end - first), torch.stack(tokens, dim=1)


def time_hf(hf, ids: torch.Tensor, new: int) -> tuple[float, float, torch.Tensor]:
    """The same for ``generate``: the first token is timed as a ``max_new_tokens=1`` call, the decode rate over
    the difference to the full call."""
    def run(n: int) -> tuple[float, torch.Tensor]:
        start = time.perf_counter()
        out = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                          do_sample=False, pad_token_id=0)
        return time.perf_counter() - start, out[:, ids.shape[1]:]

    first, _ = run(1)
    total, tokens = run(new)
    return first, (new - 1) / (total - first), tokens


def bench_dtype(
    lm: torch.nn.Module, load_hf: Callable[[torch.dtype], torch.nn.Module], dtype_name: str, args: argparse.Namespace
) -> dict:
    """One table group. ``int8`` / ``int4``: our weight-only quantized model (bf16 activations) against transformers
    in float32, the comparison the serve issue asks for."""
    if dtype_name in QUANTIZED:
        ours, hf_dtype = QUANTIZED[dtype_name](copy.deepcopy(lm).float()), torch.float32
    else:
        hf_dtype = getattr(torch, dtype_name)
        ours = copy.deepcopy(lm).to(hf_dtype)
    compiled = serve.compile_decoding(ours, freeze=True)
    hf = load_hf(hf_dtype).eval()
    ids = torch.randint(3, lm.config.vocab_size, (1, args.prompt), generator=torch.Generator().manual_seed(0))
    cfg = GenerationConfig(max_new_tokens=args.new, eos_token_ids=())
    contenders: dict[str, Callable[[], tuple[float, float, torch.Tensor]]] = {
        "lmplanes eager": lambda: time_ours(ours, ids, cfg),
        "lmplanes compiled (frozen weights)": lambda: time_ours(compiled, ids, cfg),
        "transformers generate": lambda: time_hf(hf, ids, args.new),
    }
    label = f"{dtype_name} (ours) / float32 (transformers)" if dtype_name in QUANTIZED else dtype_name
    return race(contenders, args.rounds, label, weight_bytes(ours))


def race(contenders: dict[str, Callable[[], tuple[float, float, torch.Tensor]]], rounds: int, label: str,
         nbytes: int) -> dict:
    """Warm every contender up, then run them in alternation for ``rounds`` rounds; one table group."""
    for run in contenders.values():  # warm-up: compilation, allocator, oneDNN primitive caches
        run()
    firsts: dict[str, list[float]] = {name: [] for name in contenders}
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    outputs = {}
    for _ in range(rounds):
        for name, run in contenders.items():
            first, rate, outputs[name] = run()
            firsts[name].append(first)
            rates[name].append(rate)
    reference = outputs["transformers generate"]
    return {
        "dtype": label,
        "bytes": nbytes,
        "first_ms": {n: 1e3 * statistics.median(v) for n, v in firsts.items()},
        "rate": {n: statistics.median(v) for n, v in rates.items()},
        "rates": rates,
        "same_tokens": {n: torch.equal(out, reference) for n, out in outputs.items()},
    }


def bench_llamacpp(gguf: Path, load_hf: Callable[[torch.dtype], torch.nn.Module], vocab: int,
                   args: argparse.Namespace) -> dict:
    """llama.cpp on the GGUF file as it is (its own quantized kernels, the same thread count, a process of its
    own: see ``llamacpp_worker.py``) against transformers in float32."""
    worker = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("llamacpp_worker.py")), str(gguf), str(torch.get_num_threads()),
         str(args.prompt + args.new + 8)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        # Two OpenMP runtimes on the same cores: with the default (spinning) wait, the idle one's threads spin
        # while the other one works (measured: both fall to a tenth of their speed); waiting passively, each
        # contender has the cores to itself during its turn.
        env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"},
    )
    assert worker.stdin is not None and worker.stdout is not None
    ids = torch.randint(3, vocab, (1, args.prompt), generator=torch.Generator().manual_seed(0))
    request = json.dumps({"prompt": ids[0].tolist(), "new": args.new}) + "\n"

    def time_llamacpp() -> tuple[float, float, torch.Tensor]:
        worker.stdin.write(request)
        worker.stdin.flush()
        line = worker.stdout.readline()
        if not line:  # seen: a llama.cpp built for AMX dies in llama_decode on some Xeons
            raise RuntimeError(f"the llama.cpp worker exited with status {worker.wait()} before replying")
        reply = json.loads(line)
        return reply["first"], reply["rate"], torch.tensor([reply["tokens"]])

    hf = load_hf(torch.float32).eval()
    contenders = {
        "llama.cpp (llama-cpp-python, Q4_1)": time_llamacpp,
        "transformers generate": lambda: time_hf(hf, ids, args.new),
    }
    try:
        return race(contenders, args.rounds, "Q4_1 (llama.cpp) / float32 (transformers)", gguf.stat().st_size)
    finally:
        worker.stdin.close()
        worker.wait()


def report(results: list[dict], bandwidth: float, resident: tuple[int, float], args: argparse.Namespace, command: str,
           name: str) -> str:
    start, end = MARKERS[args.gguf is not None]
    lines = [
        start,
        f"## Serve: batch-1 decoding, {name}, against transformers `generate` (CPU)",
        "",
        f"Command: `python benchmarks/bench_decode.py {command}`  ",
        f"Machine: {cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
        f"transformers {_transformers_version()}, Python {sys.version.split()[0]}, {dt.date.today()}. "
        f"Huge pages for PyTorch's large CPU allocations (THP_MEM_ALLOC_ENABLE) {args.huge_pages} for every contender. "
        f"Prompt {args.prompt} random tokens, {args.new} new tokens, greedy; medians of {args.rounds} rounds, "
        "contenders alternating within each round. Streaming read bandwidth measured in the same run: "
        f"{bandwidth / 1e9:.1f} GB/s (512 MiB); a {resident[0] / 1e6:.0f} MB tensor (the float32 weights' size) read "
        f"again and again: {resident[1] / 1e9:.1f} GB/s (what a last-level cache adds; the bounds below use the "
        "streaming figure).",
        "",
        "| dtype | contender | time to first token | decode tok/s | vs transformers | fraction of the bandwidth bound | tokens equal to transformers' |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        bound = bandwidth / r["bytes"]
        hf_rate = r["rate"]["transformers generate"]
        for name, rate in r["rate"].items():
            lines.append(
                f"| {r['dtype']} | {name} | {r['first_ms'][name]:.1f} ms | {rate:.1f} | {rate / hf_rate:.2f}x | "
                f"{rate / bound:.0%} (bound {bound:.0f} tok/s for {r['bytes'] / 1e6:.1f} MB) | "
                f"{'yes' if r['same_tokens'][name] else 'no'} |"
            )
    lines += [
        "",
        "Per-round decode tok/s: " + "; ".join(
            f"{r['dtype']} {name}: " + ", ".join(f"{v:.0f}" for v in values)
            for r in results for name, values in r["rates"].items()
        ) + ".",
        end,
    ]
    return "\n".join(lines)


def _transformers_version() -> str:
    import transformers

    return transformers.__version__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--prompt", type=int, default=128)
    parser.add_argument("--new", type=int, default=128)
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16", "int8", "int4"],
                        choices=["float32", "bfloat16", *QUANTIZED],
                        help="int8, int4: lmplanes' weight-only quantized models (bf16 activations) against "
                             "transformers in float32")
    parser.add_argument("--gguf", type=Path, default=None, help="a llama.cpp file to load on both sides instead")
    parser.add_argument("--write", type=Path, default=None, help="replace the decode section of this markdown file")
    parser.add_argument("--huge-pages", choices=["on", "off"], default="on",
                        help="THP_MEM_ALLOC_ENABLE for every contender in this process (default on, as the "
                        "lmplanes decoding commands set it; see pack.huge_pages)")
    args = parser.parse_args(argv)
    wanted = "1" if args.huge_pages == "on" else "0"
    if os.environ.get(huge_pages.VARIABLE, "0") != wanted:
        # PyTorch read the setting when this script imported it: run again with it set from the start.
        again = [sys.executable, str(Path(__file__).resolve()), *(sys.argv[1:] if argv is None else argv)]
        os.execve(sys.executable, again, {**os.environ, huge_pages.VARIABLE: wanted})
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    bandwidth = read_bandwidth()
    with tempfile.TemporaryDirectory() as scratch:
        if args.gguf is not None:
            lm = model.from_gguf(args.gguf)
            name = f"{args.gguf.name} ({lm.config.name})"

            def load_hf(dtype: torch.dtype) -> torch.nn.Module:
                return AutoModelForCausalLM.from_pretrained(args.gguf.parent, gguf_file=args.gguf.name, dtype=dtype)
        else:
            lm, name = model.build(specs.load_preset("llama-55m")).eval(), "llama-55m"
            hf_dir = model.to_hf(lm, Path(scratch) / "hf")

            def load_hf(dtype: torch.dtype) -> torch.nn.Module:
                return AutoModelForCausalLM.from_pretrained(hf_dir, dtype=dtype)

        float32_bytes = weight_bytes(lm)
        resident = (float32_bytes, read_bandwidth(float32_bytes))
        results = [bench_dtype(lm, load_hf, dtype, args) for dtype in args.dtypes]
        if args.gguf is not None and importlib.util.find_spec("llama_cpp") is not None:
            try:
                results.append(bench_llamacpp(args.gguf, load_hf, lm.config.vocab_size, args))
            except (RuntimeError, BrokenPipeError) as exc:  # our groups are measured: report them all the same
                print(f"llama.cpp left out: {exc}", file=sys.stderr)
    command = f"--rounds {args.rounds} --prompt {args.prompt} --new {args.new} --dtypes {' '.join(args.dtypes)}"
    command += " --huge-pages off" if args.huge_pages == "off" else ""
    command += (f" --gguf {args.gguf.name}" if args.gguf else "") + (f" --write {args.write}" if args.write else "")
    section = report(results, bandwidth, resident, args, command, name)
    print(section)
    if args.write:
        write_section(args.write, section, *MARKERS[args.gguf is not None])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
