"""Training speed and quality against nanoGPT on its own CPU recipe (shakespeare-char), side by side.

    python benchmarks/bench_train.py --nanogpt PATH/TO/nanoGPT [--iters 2000] [--rounds 2] [--ablate] [--write BENCHMARKS.md]

PATH is a checkout of github.com/karpathy/nanoGPT; its ``train.py``, ``model.py`` and ``configurator.py`` are
copied into a scratch folder at run time (nothing of it is kept in this repository) and run with the command its
README gives for the CPU (``--device=cpu --compile=False --eval_iters=20 --log_interval=1 --block_size=64
--batch_size=12 --n_layer=4 --n_head=4 --n_embd=128 --max_iters=2000 --lr_decay_iters=2000 --dropout=0.0``;
``--always_save_checkpoint=True`` is added so its final weights are kept). Its data files are written from the
same bundled corpus, with the same character vocabulary and 90/10 split, as lmplanes trains on. Then
``lmplanes train gpt-shakespeare-char`` runs the same model, data, batch and schedule with the preset's own
settings.

The pair runs ``--rounds`` times in alternation (nanoGPT, lmplanes, nanoGPT, ...), so a slow spell of a shared
machine hits both. Reported: the median milliseconds per iteration of each over all its rounds (evaluation
iterations and the first 10 of each run left out), the per-round medians, their ratio, and the validation loss at the last iteration: as each prints it (20 random batches, noisy), and
for both final models on the same 200 validation batches through the same evaluator (nanoGPT's weights are
mapped into lmplanes' gpt-shakespeare-char model, which has the same architecture). ``--ablate`` also runs
lmplanes for 300 iterations with one preset setting turned back at a time, to say what each is worth.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import pickle
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from bench_spine import cpu_name, write_section

import data
import model
import specs

START, END = "<!-- bench:train:start -->", "<!-- bench:train:end -->"
NANOGPT_ARGS = [
    "config/train_shakespeare_char.py", "--device=cpu", "--compile=False", "--eval_iters=20", "--log_interval=1",
    "--block_size=64", "--batch_size=12", "--n_layer=4", "--n_head=4", "--n_embd=128", "--dropout=0.0",
    "--always_save_checkpoint=True",
]
ABLATIONS = {
    "compile=false": ["compile=false"],
    "optimizer.implementation=foreach": ["optimizer.implementation=foreach"],
    "precision=float32": ["precision=float32"],
}


def prepare_nanogpt(checkout: Path, scratch: Path) -> Path:
    """nanoGPT's scripts in a scratch folder, with its shakespeare_char data written from our build."""
    work = scratch / "nanogpt"
    work.mkdir()
    for name in ("train.py", "model.py", "configurator.py"):
        shutil.copy(checkout / name, work / name)
    shutil.copytree(checkout / "config", work / "config")
    folder = work / "data" / "shakespeare_char"
    folder.mkdir(parents=True)
    build = data.shakespeare_char()
    for split in ("train", "val"):
        shards = data.TokenShards(build, split)
        np.asarray(shards.read(0, len(shards)), dtype=np.uint16).tofile(folder / f"{split}.bin")
    tokenizer = data.TokenShards(build, "train").tokenizer()
    itos = {i: tokenizer.decode([i]) for i in range(tokenizer.vocab_size)}
    with open(folder / "meta.pkl", "wb") as fh:  # the file nanoGPT's train.py reads its vocab_size from
        pickle.dump({"vocab_size": tokenizer.vocab_size, "itos": itos, "stoi": {c: i for i, c in itos.items()}}, fh)
    return work


def run_nanogpt(work: Path, iters: int) -> dict:
    args = [*NANOGPT_ARGS, f"--max_iters={iters}", f"--lr_decay_iters={iters}"]
    done = subprocess.run([sys.executable, "train.py", *args], cwd=work, capture_output=True, text=True, check=True)
    times = {int(m[1]): float(m[2]) for m in re.finditer(r"^iter (\d+): loss [\d.]+, time ([\d.]+)ms", done.stdout, re.M)}
    evals = {int(m[1]): float(m[2]) for m in re.finditer(r"^step (\d+): train loss [\d.]+, val loss ([\d.]+)", done.stdout, re.M)}
    return {"ms": times, "val": evals, "checkpoint": work / "out-shakespeare-char" / "ckpt.pt"}


def run_lmplanes(scratch: Path, name: str, iters: int, overrides: list[str]) -> dict:
    out = scratch / name
    sets = [f"max_steps={iters}", f"schedule.decay_steps={iters}", *overrides]
    command = [sys.executable, "-m", "pack", "train", "gpt-shakespeare-char", "--out", str(out), "--quiet"]
    for item in sets:
        command += ["--set", item]
    subprocess.run(command, capture_output=True, text=True, check=True)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {
        "ms": {r["step"]: r["step_ms"] for r in rows},
        "val": {r["step"]: r["val_loss"] for r in rows if "val_loss" in r},
        "checkpoint": out / "checkpoints" / f"step-{iters:08d}",
    }


def steady(times: dict[int, float], eval_every: int = 250) -> list[float]:
    """Iteration times, leaving out the first 10 and the iterations that evaluated or saved."""
    return [ms for it, ms in times.items() if it > 10 and it % eval_every not in (0, 1)]


def median_ms(times: dict[int, float]) -> float:
    return statistics.median(steady(times))


def nanogpt_as_lmplanes(checkpoint: Path) -> torch.nn.Module:
    """nanoGPT's final weights in lmplanes' gpt-shakespeare-char model (same architecture: pre-norm, no biases,
    exact GELU, tied head); q, k and v are split out of nanoGPT's fused ``c_attn``."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["model"]
    cfg = specs.load_config("gpt-shakespeare-char")
    lm = model.build(cfg)
    ours = {"tok_embeddings.weight": state["transformer.wte.weight"], "positions.embedding.weight": state["transformer.wpe.weight"],
            "norm.weight": state["transformer.ln_f.weight"], "lm_head.weight": state["lm_head.weight"]}
    for i in range(cfg.n_layers):
        theirs = f"transformer.h.{i}."
        q, k, v = state[theirs + "attn.c_attn.weight"].chunk(3, dim=0)
        ours.update({
            f"layers.{i}.attn_norm.weight": state[theirs + "ln_1.weight"],
            f"layers.{i}.attn.wq.weight": q, f"layers.{i}.attn.wk.weight": k, f"layers.{i}.attn.wv.weight": v,
            f"layers.{i}.attn.wo.weight": state[theirs + "attn.c_proj.weight"],
            f"layers.{i}.mlp_norm.weight": state[theirs + "ln_2.weight"],
            f"layers.{i}.mlp.fc.weight": state[theirs + "mlp.c_fc.weight"],
            f"layers.{i}.mlp.proj.weight": state[theirs + "mlp.c_proj.weight"],
        })
    lm.load_state_dict(ours, strict=True)
    return lm.eval()


@torch.no_grad()
def common_val_loss(lm: torch.nn.Module, batches: int) -> float:
    """Mean loss over the first ``batches`` batches (12 x 64) of a fixed validation stream."""
    val = data.RandomWindows(data.TokenShards(data.shakespeare_char(), "val"), seq_len=64, batch_size=12, seed=7)
    losses = []
    for i in range(batches):
        batch = val.batch(i)
        logits = lm(batch.input_ids)
        losses.append(torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch.labels.flatten()).item())
    return sum(losses) / len(losses)


def report(nanos: list[dict], ourses: list[dict], common: dict, iters: int, ablations: dict, wall: dict) -> str:
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")
    n_ms = statistics.median([ms for run in nanos for ms in steady(run["ms"])])
    o_ms = statistics.median([ms for run in ourses for ms in steady(run["ms"])])
    nano, ours = nanos[-1], ourses[-1]
    rounds = len(nanos)
    tokens = 12 * 64
    preset = specs.load_config("gpt-shakespeare-char", kind="train")
    lines = [
        START,
        "## Training: lmplanes vs nanoGPT on nanoGPT's CPU shakespeare-char recipe",
        "",
        f"Command: `python benchmarks/bench_train.py --nanogpt PATH --iters {iters} --rounds {rounds}"
        f"{' --ablate' if ablations else ''} --write BENCHMARKS.md`  ",
        f"Machine: {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, Python {sys.version.split()[0]}, "
        f"{when}. {rounds} rounds of the two runs in alternation; medians over every round, leaving out the first "
        "10 iterations of each run and the evaluation ones. Per-round medians (nanoGPT / lmplanes): "
        + ", ".join(f"{median_ms(n['ms']):.2f} / {median_ms(o['ms']):.2f} ms" for n, o in zip(nanos, ourses)) + ".",
        "",
        "| | nanoGPT (README CPU command) | lmplanes (`lmplanes train gpt-shakespeare-char`) | ratio |",
        "| --- | --- | --- | --- |",
        f"| median ms / iteration | {n_ms:.2f} | {o_ms:.2f} | {o_ms / n_ms:.2f} |",
        f"| tokens / s (12 x 64 per iteration) | {tokens / n_ms * 1e3:,.0f} | {tokens / o_ms * 1e3:,.0f} | "
        f"{n_ms / o_ms:.2f}x |",
        f"| wall time of a whole run (last round; lmplanes' includes compiling) | {wall['nanogpt']:.0f} s | "
        f"{wall['lmplanes']:.0f} s | {wall['lmplanes'] / wall['nanogpt']:.2f} |",
        f"| val loss at iteration {iters}, as each reports it (20 batches) | {nano['val'].get(iters, float('nan')):.4f} | "
        f"{ours['val'].get(iters, float('nan')):.4f} | |",
        f"| val loss at iteration {iters}, both models on the same 200 batches | {common['nanogpt']:.4f} | "
        f"{common['lmplanes']:.4f} | {common['lmplanes'] - common['nanogpt']:+.4f} |",
        "",
        f"lmplanes preset settings: compile={preset.compile}, precision={preset.precision}, "
        f"optimizer.implementation={preset.optimizer.implementation}.",
    ]
    if ablations:
        lines += ["", "One setting turned back at a time (300 iterations each, median ms / iteration):", "",
                  "| lmplanes run | ms / iteration | vs the preset |", "| --- | --- | --- |",
                  f"| the preset | {ablations['preset']:.2f} | 1.00 |"]
        lines += [f"| {name} | {ms:.2f} | {ms / ablations['preset']:.2f} |" for name, ms in ablations.items() if name != "preset"]
    lines.append(END)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nanogpt", type=Path, required=True, help="a checkout of karpathy/nanoGPT")
    parser.add_argument("--iters", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2, help="how many times to run the pair, alternating")
    parser.add_argument("--ablate", action="store_true", help="also time the preset with one setting turned back")
    parser.add_argument("--write", type=Path, default=None, help="replace the training section of this markdown file")
    args = parser.parse_args(argv)
    import time

    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        work = prepare_nanogpt(args.nanogpt, scratch)
        nanos, ourses, wall = [], [], {}
        for round_ in range(args.rounds):
            started = time.perf_counter()
            nanos.append(run_nanogpt(work, args.iters))
            wall["nanogpt"] = time.perf_counter() - started
            started = time.perf_counter()
            ourses.append(run_lmplanes(scratch, f"lmplanes-{round_}", args.iters, []))
            wall["lmplanes"] = time.perf_counter() - started
        common = {
            "nanogpt": common_val_loss(nanogpt_as_lmplanes(nanos[-1]["checkpoint"]), 200),
            "lmplanes": common_val_loss(model.load_checkpoint(ourses[-1]["checkpoint"]), 200),
        }
        ablations = {}
        if args.ablate:
            ablations["preset"] = median_ms(run_lmplanes(scratch, "ablate-preset", 300, [])["ms"])
            for name, overrides in ABLATIONS.items():
                ablations[name] = median_ms(run_lmplanes(scratch, f"ablate-{len(ablations)}", 300, overrides)["ms"])
    section = report(nanos, ourses, common, args.iters, ablations, wall)
    print(section)
    if args.write is not None:
        write_section(args.write, section, START, END)
    return 0


if __name__ == "__main__":
    sys.exit(main())
