"""Data benchmark: one training batch of random windows, lmplanes vs nanoGPT's way of sampling.

    python benchmarks/bench_data_sampling.py [--repeats 30] [--batch-size 12] [--seq-len 64]

The corpus is the shakespeare-char train split (1,003,854 uint16 tokens, built on first use). Contenders:
``data.RandomWindows`` (one vectorised gather per batch, returned as a checked ``specs.Batch``) and nanoGPT's
``get_batch`` approach, restated here: a fresh ``np.memmap`` per batch, ``torch.randint`` offsets, one slice
and tensor per row, ``torch.stack``. Each timed repeat draws 200 batches; contenders alternate on every
repeat; the table gives the median time per batch. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import platform
import sys
from collections.abc import Callable

import numpy as np
import torch
from bench_spine import cpu_name, interleaved_medians

import data

BATCHES_PER_REPEAT = 200


def nanogpt_style(path: str, seq_len: int, batch_size: int) -> Callable[[], object]:
    def get_batch() -> tuple[torch.Tensor, torch.Tensor]:
        tokens = np.memmap(path, dtype=np.uint16, mode="r")  # reopened per batch, against a memmap leak
        offsets = torch.randint(len(tokens) - seq_len, (batch_size,))
        x = torch.stack([torch.from_numpy(tokens[i : i + seq_len].astype(np.int64)) for i in offsets])
        y = torch.stack([torch.from_numpy(tokens[i + 1 : i + 1 + seq_len].astype(np.int64)) for i in offsets])
        return x, y

    return get_batch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=12)
    parser.add_argument("--seq-len", type=int, default=64)
    args = parser.parse_args(argv)
    train = data.TokenShards(data.shakespeare_char(), "train")
    stream = iter(data.RandomWindows(train, seq_len=args.seq_len, batch_size=args.batch_size, seed=0))
    nanogpt = nanogpt_style(str(train.directory / "train-00000.bin"), args.seq_len, args.batch_size)

    def many(fn: Callable[[], object]) -> Callable[[], None]:
        def run() -> None:
            for _ in range(BATCHES_PER_REPEAT):
                fn()

        return run

    medians = interleaved_medians(
        {"lmplanes": many(lambda: next(stream)), "nanogpt": many(nanogpt)}, args.repeats
    )
    ours, theirs = (medians[k] / BATCHES_PER_REPEAT * 1e6 for k in ("lmplanes", "nanogpt"))
    print(f"Machine: {cpu_name()}, torch {torch.__version__}, numpy {np.__version__}, Python {platform.python_version()}")
    print(f"batch {args.batch_size} x {args.seq_len} from {len(train):,} tokens, median of {args.repeats} x "
          f"{BATCHES_PER_REPEAT} batches")
    print("| sampler | per batch | ratio (ours / nanoGPT) |\n| --- | --- | --- |")
    print(f"| data.RandomWindows | {ours:.1f} us | {ours / theirs:.2f} |\n| nanoGPT get_batch | {theirs:.1f} us | 1.00 |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
