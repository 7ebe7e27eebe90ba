"""The eval plane's commands, shared by ``lmplanes eval`` (pack) and ``python -m eval``:

    eval ppl  MODEL [--text FILE] [--context N --stride S --batch B] [--json]
    eval perf MODEL [--prompt-tokens N --new-tokens N --batch B --peak-tflops X] [--json] [--out DIR]
    eval harness run LM_EVAL_ARGS...  (lm_eval's own command line, with --model lmplanes registered; also
                                      'harness ls tasks', or 'harness -- ARGS' for lm_eval's form without 'run')
    eval tasks DIR                    (write the shipped lm_eval task YAMLs into DIR)

How MODEL is named and loaded is the caller's business (``--checkpoint DIR`` or ``--gguf FILE`` in ``lmplanes``,
``--checkpoint DIR`` through the installed model store in ``python -m eval``): it hands over a ``load`` function
from the parsed arguments to the model and its tokenizer, so this module never imports model code.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import data
from eval.corpora import WIKITEXT2_TEST
from eval.harness_tasks import write_tasks
from specs.protocols import CausalLM

Loader = Callable[[argparse.Namespace], tuple[CausalLM, data.Tokenizer]]


def add_commands(commands: argparse._SubParsersAction, add_model_arguments: Callable[[argparse.ArgumentParser], None],
                 load: Loader) -> None:
    """Add ``ppl``, ``perf``, ``harness`` and ``tasks`` to ``commands``; ``add_model_arguments`` adds the options
    that name a model, which ``load`` reads."""
    ppl = commands.add_parser(
        "ppl", help="perplexity on a text file (sliding windows)",
        description="Perplexity of the model on a text file by the sliding-window method Hugging Face documents: "
        "windows of --context tokens every --stride tokens, each token scored once with at least context - stride "
        "tokens before it. The default text is WikiText-2's test split, shipped with lmplanes.")
    add_model_arguments(ppl)
    ppl.add_argument("--text", metavar="FILE", default=str(WIKITEXT2_TEST),
                     help="UTF-8 text to score (default: WikiText-2 test, shipped)")
    ppl.add_argument("--context", type=int, metavar="N", help="window length in tokens (default: the model's context)")
    ppl.add_argument("--stride", type=int, metavar="S", help="tokens between window starts (default: half the context)")
    ppl.add_argument("--batch", type=int, default=1, metavar="B", help="windows per forward (default 1)")
    ppl.add_argument("--json", action="store_true", help="print one JSON object instead of a sentence")
    ppl.set_defaults(run=lambda args: run_ppl(args, load))

    perf = commands.add_parser(
        "perf", help="time to first token, tokens/s, latency percentiles, memory, MFU, bandwidth bound",
        description="Generate greedily after random prompts and report time to first token, prefill and decode "
        "tokens/s, per-token latency percentiles, peak memory (RSS on CPU, the allocator's on a GPU), model FLOPs "
        "utilisation against a measured (or --peak-tflops) peak and the fraction of the memory-bandwidth bound "
        "decoding reaches (bandwidth measured in the same run). A Markdown table, or JSON with --json.")
    add_model_arguments(perf)
    perf.add_argument("--prompt-tokens", type=int, default=128, metavar="N", help="prompt length (default 128)")
    perf.add_argument("--new-tokens", type=int, default=64, metavar="N", help="tokens to generate (default 64)")
    perf.add_argument("--batch", type=int, default=1, metavar="B", help="rows generated together (default 1)")
    perf.add_argument("--peak-tflops", type=float, metavar="X", help="declared peak TFLOP/s for MFU (default: "
                      "measured with a matmul in the model's dtype)")
    perf.add_argument("--json", action="store_true", help="print JSON instead of the Markdown table")
    perf.add_argument("--out", metavar="DIR", help="also write perf.json and perf.md into DIR")
    perf.set_defaults(run=lambda args: run_perf_command(args, load))

    harness = commands.add_parser(
        "harness", help="lm-evaluation-harness with the lmplanes model registered", add_help=False,
        description="Run lm_eval's own command line with '--model lmplanes' available: 'harness run --model lmplanes "
        "--model_args checkpoint=DIR ...' (or 'harness -- ARGS' for lm_eval's form without 'run'); --model_args "
        "checkpoint=DIR[,dtype=bfloat16,max_length=N,max_gen_toks=N]; every other option is lm_eval's "
        "(--tasks, --include_path for local task YAMLs, --batch_size, --device, --limit, --output_path ...).")
    harness.add_argument("lm_eval_args", nargs=argparse.REMAINDER, help="arguments for lm_eval")
    harness.set_defaults(run=run_harness)

    tasks = commands.add_parser(
        "tasks", help="write the shipped lm_eval tasks (lmplanes_mc, lmplanes_rolling) as YAML into a folder",
        description="Write lmplanes_mc.yaml and lmplanes_rolling.yaml into DIR, pointing at the task data shipped "
        "with lmplanes; then run them with 'eval harness --include_path DIR --tasks lmplanes_mc,lmplanes_rolling'.")
    tasks.add_argument("folder", metavar="DIR")
    tasks.set_defaults(run=run_tasks)


def run_ppl(args: argparse.Namespace, load: Loader) -> int:
    from eval.perplexity import perplexity

    text = Path(args.text).read_text(encoding="utf-8")
    lm, tokenizer = load(args)
    ids = tokenizer.encode(text)
    result = perplexity(lm, ids, context=args.context, stride=args.stride, batch_size=args.batch, progress=not args.json)
    if args.json:
        print(json.dumps(result.as_dict()))
    else:
        print(f"perplexity {result.perplexity:.4f} (nll {result.nll:.4f} nats/token) over {result.tokens:,} tokens of "
              f"{args.text}; context {result.context}, stride {result.stride}; {result.tokens_per_s:,.0f} tokens/s")
    return 0


def run_perf_command(args: argparse.Namespace, load: Loader) -> int:
    from eval.perf import run_perf

    lm, _ = load(args)
    peak = args.peak_tflops * 1e12 if args.peak_tflops else None
    report = run_perf(lm, prompt_tokens=args.prompt_tokens, new_tokens=args.new_tokens, batch=args.batch, peak_flops=peak)
    if args.out:
        folder = Path(args.out)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "perf.json").write_text(json.dumps(report.as_dict(), indent=2) + "\n", encoding="utf-8")
        (folder / "perf.md").write_text(report.markdown(), encoding="utf-8")
    sys.stdout.write(json.dumps(report.as_dict()) + "\n" if args.json else report.markdown())
    return 0


def run_harness(args: argparse.Namespace) -> int:
    from eval.harness import run_lm_eval

    forwarded = list(args.lm_eval_args)
    return run_lm_eval(forwarded[1:] if forwarded[:1] == ["--"] else forwarded)


def run_tasks(args: argparse.Namespace) -> int:
    for path in write_tasks(args.folder):
        print(path)
    return 0
