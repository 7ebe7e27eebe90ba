"""The eval plane on a real model: WikiText-2 perplexity of SmolLM2-135M-Instruct (a llama.cpp GGUF file) by
``eval.perplexity`` against ``transformers`` running Hugging Face's documented sliding-window loop on the same
windows, and ``eval.run_perf``'s figures for the same model.

    python benchmarks/bench_eval.py --gguf SmolLM2-135M-Instruct.Q4_1.gguf [--chars 20000 --context 512 --stride 256 --batch 4] [--write BENCHMARKS.md]

Both sides dequantize the same file to float32 (ours with ``model.from_gguf``, theirs with transformers' own GGUF
loader) and score the same token ids (our tokenizer's; the text is the first ``--chars`` characters of the
shipped WikiText-2 test split), so the perplexities must agree to float32 rounding. Tokens/s are measured in the
same run, one after the other.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import sys
import time
from pathlib import Path

import torch
from bench_spine import cpu_name, write_section

import data
import eval as evaluation
import model

START, END = "<!-- bench:eval:start -->", "<!-- bench:eval:end -->"


@torch.no_grad()
def hf_perplexity(hf: torch.nn.Module, ids: torch.Tensor, context: int, stride: int) -> tuple[float, int]:
    """Hugging Face's loop ("Perplexity of fixed-length models"), one window a forward."""
    seq_len, nll_sum, n_tokens, prev_end = ids.size(1), 0.0, 0, 0
    for begin in range(0, seq_len, stride):
        end = min(begin + context, seq_len)
        input_ids = ids[:, begin:end]
        target_ids = input_ids.clone()
        target_ids[:, : -(end - prev_end)] = -100
        loss = hf(input_ids, labels=target_ids).loss
        scored = int((target_ids[:, 1:] != -100).sum())
        nll_sum += float(loss) * scored
        n_tokens += scored
        prev_end = end
        if end == seq_len:
            break
    return math.exp(nll_sum / n_tokens), n_tokens


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gguf", type=Path, required=True)
    parser.add_argument("--chars", type=int, default=20000)
    parser.add_argument("--context", type=int, default=512)
    parser.add_argument("--stride", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--write", type=Path, default=None, help="replace the eval section of this markdown file")
    args = parser.parse_args(argv)
    from transformers import AutoModelForCausalLM, __version__

    lm = model.from_gguf(args.gguf).eval()
    tokenizer = data.load_tokenizer(args.gguf)
    ids = tokenizer.encode(evaluation.WIKITEXT2_TEST.read_text(encoding="utf-8")[: args.chars])
    ours = evaluation.perplexity(lm, ids, context=args.context, stride=args.stride, batch_size=args.batch, progress=False)
    hf = AutoModelForCausalLM.from_pretrained(args.gguf.parent, gguf_file=args.gguf.name, dtype=torch.float32).eval()
    start = time.perf_counter()
    theirs, scored = hf_perplexity(hf, torch.tensor([ids]), args.context, args.stride)
    hf_rate = scored / (time.perf_counter() - start)
    del hf
    perf = evaluation.run_perf(lm, prompt_tokens=128, new_tokens=32)

    command = (f"python benchmarks/bench_eval.py --gguf {args.gguf.name} --chars {args.chars} --context {args.context} "
               f"--stride {args.stride} --batch {args.batch}" + (f" --write {args.write}" if args.write else ""))
    lines = [
        START,
        f"## Eval: WikiText-2 perplexity and the perf harness, {args.gguf.name} (CPU)",
        "",
        f"Command: `{command}`  ",
        f"Machine: {cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}, transformers "
        f"{__version__}, Python {sys.version.split()[0]}, {dt.date.today()}. Text: the first {args.chars:,} characters "
        f"of the shipped WikiText-2 test split, {len(ids):,} tokens; windows of {args.context} every {args.stride}; "
        "float32 weights dequantized from the same file on both sides.",
        "",
        "| contender | perplexity | tokens scored | scored tokens/s |",
        "| --- | --- | --- | --- |",
        f"| lmplanes `eval.perplexity` (batch {args.batch}) | {ours.perplexity:.4f} | {ours.tokens:,} | {ours.tokens_per_s:,.0f} |",
        f"| transformers, Hugging Face's loop (one window a forward) | {theirs:.4f} | {scored:,} | {hf_rate:,.0f} |",
        "",
        f"Relative difference of the perplexities: {abs(ours.perplexity - theirs) / theirs:.1e}.",
        "",
        "`eval.run_perf` on the same model (batch 1, 128 random prompt tokens, 32 new, greedy):",
        "",
        perf.markdown().rstrip("\n"),
        END,
    ]
    section = "\n".join(lines)
    print(section)
    if args.write:
        write_section(args.write, section, START, END)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
