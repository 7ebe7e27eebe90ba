"""Peak memory of training steps, measured, against ``specs.training_memory`` computed from the config.

    python benchmarks/bench_train_memory.py                       # single, ddp and fsdp2 (2 ranks) on the CPU
    python benchmarks/bench_train_memory.py --preset llama-55m --seq-len 128 --batch 4

Each strategy runs in fresh processes (``torchrun`` for 2 ranks). A process records its resident set before
the model is built and its peak (``ru_maxrss``) after three optimizer steps; the difference is what training
added, compared with the computed weights + gradients + AdamW states + activations of that rank. On CUDA the
torch allocator's ``max_memory_allocated`` is used instead. Prints one Markdown table row per strategy.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STEPS = 3


def worker(preset: str, strategy: str, seq_len: int, batch: int, out: str) -> None:
    sys.path.insert(0, str(ROOT))
    import torch

    import model
    import specs
    from train.distributed import join, local_device
    from train.loss import lm_loss
    from train.optim import build_optimizer
    from train.parallelize import gradient_sync, parallelize
    from train.streams import open_streams

    base = specs.load_config("gpt-shakespeare-char", kind="train")
    cfg = dataclasses.replace(
        base,
        model=dataclasses.replace(specs.load_config(preset), dtype="float32"),
        data=dataclasses.replace(base.data, seq_len=seq_len, batch_size=batch),
        precision="float32",
        parallel=specs.ParallelConfig(strategy=strategy),  # type: ignore[arg-type]
    )
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    world = join(cfg.parallel, device)
    device = local_device(device, world)
    streams = open_streams(cfg, rank=world.rank, world_size=world.world_size)
    batches = iter(streams.train)
    _warm_up(device)
    before = _rss_bytes()
    torch.manual_seed(0)
    lm = parallelize(model.build(cfg.model, device=device), cfg, world, device)
    optimizer = build_optimizer(lm, cfg.optimizer)
    for _ in range(STEPS):
        batch = next(batches)
        ids = batch.input_ids.remainder(cfg.model.vocab_size).to(device)  # the corpus vocabulary is smaller
        with gradient_sync(lm, True):
            loss, _ = lm_loss(lm, specs.Batch(input_ids=ids, labels=ids))  # type: ignore[arg-type]
            loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    if device.type == "cuda":
        measured = torch.cuda.max_memory_allocated(device)
    else:
        measured = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    computed = specs.training_memory(cfg, world_size=world.world_size)
    if world.main:
        Path(out).write_text(json.dumps({"measured": measured, "computed": computed.total_bytes,
                                         "parts": [computed.weight_bytes, computed.gradient_bytes,
                                                   computed.optimizer_bytes, computed.activation_bytes]}))
    world.close()


def _warm_up(device: object) -> None:
    """One step of a tiny model first, so that the kernels' code and the allocator's arenas it pages in are not
    counted as training memory."""
    import torch

    import model
    import specs
    from train.loss import lm_loss

    tiny = model.build(specs.load_config("llama-tiny"), device=device)
    ids = torch.ones(2, 16, dtype=torch.long, device=device)  # type: ignore[call-overload]
    lm_loss(tiny, specs.Batch(input_ids=ids, labels=ids))[0].backward()  # type: ignore[arg-type]


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="llama-55m")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch", type=int, default=4, help="the global batch (rows)")
    parser.add_argument("--worker", nargs=2, metavar=("STRATEGY", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.preset, args.worker[0], args.seq_len, args.batch, args.worker[1])
        return
    print(f"{args.preset}, global batch {args.batch} x {args.seq_len}, float32, {STEPS} steps")
    print("| strategy | ranks | weights | grads | AdamW | activations | computed | measured | measured/computed |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for strategy, ranks in (("single", 1), ("ddp", 2), ("fsdp2", 2)):
        with tempfile.TemporaryDirectory() as tmp:
            out = str(Path(tmp) / "result.json")
            flags = [f"--preset={args.preset}", f"--seq-len={args.seq_len}", f"--batch={args.batch}",
                     "--worker", strategy, out]
            launch = [sys.executable] if ranks == 1 else [sys.executable, "-m", "torch.distributed.run",
                                                          "--standalone", f"--nproc-per-node={ranks}"]
            # Large blocks always mmapped: freed memory leaves the resident set at once, instead of glibc's
            # dynamic threshold keeping it in the heap (which would count freed tensors as held).
            env = {**os.environ, "PYTHONPATH": str(ROOT), "MALLOC_MMAP_THRESHOLD_": "131072"}
            subprocess.run([*launch, __file__, *flags], check=True, env=env)
            result = json.loads(Path(out).read_text())
        mib = [f"{part / 2**20:,.0f}" for part in result["parts"]]
        print(f"| {strategy} | {ranks} | {' | '.join(mib)} | {result['computed'] / 2**20:,.0f} MiB | "
              f"{result['measured'] / 2**20:,.0f} MiB | {result['measured'] / result['computed']:.2f} |")


if __name__ == "__main__":
    main()
