"""Writer process for tests/model/test_killed_saves.py (run as a script; pytest does not collect it).

Usage: ``python save_loop_child.py CKPT_A CKPT_B SCRATCH SHARD_BYTES``. It loads the two checkpoints, times a
few replacing saves in SCRATCH and prints ``ready SECONDS`` (the median). Then, for each stdin line
``TARGET FIRST DELAY MODE``, it forks a writer that saves FIRST, then the other, alternately over TARGET
(``overwrite=True``) until it is killed; MODE ``fallback`` makes the writer's platform lack the atomic
exchange. After DELAY seconds it SIGKILLs the writer, reaps it and prints ``killed``, or ``died STATUS`` if
the writer stopped by itself. Forking spares each kill a Python and torch start-up.
"""

from __future__ import annotations

import os
import signal
import statistics
import sys
import time
import traceback

import torch

torch.set_num_threads(1)  # no intra-op thread pool: a fork of a process that runs one could hang in its first op

import model  # noqa: E402
import model.atomic  # noqa: E402


def writer(models: dict, target: str, first: str, mode: str, shard: int) -> None:
    if mode == "fallback":
        model.atomic.exchange = lambda a, b: False
    order = [first, "B" if first == "A" else "A"]
    i = 0
    while True:
        model.save_checkpoint(models[order[i % 2]], target, overwrite=True, max_shard_bytes=shard)
        i += 1


def main() -> None:
    src_a, src_b, scratch, shard_text = sys.argv[1:5]
    shard = int(shard_text)
    models = {"A": model.load_checkpoint(src_a, verify=False), "B": model.load_checkpoint(src_b, verify=False)}
    model.save_checkpoint(models["A"], scratch, max_shard_bytes=shard)
    times = []
    for name in "BABAB":
        start = time.perf_counter()
        model.save_checkpoint(models[name], scratch, overwrite=True, max_shard_bytes=shard)
        times.append(time.perf_counter() - start)
    print("ready", statistics.median(times), flush=True)
    for line in sys.stdin:
        target, first, delay, mode = line.split()
        pid = os.fork()
        if pid == 0:
            try:
                writer(models, target, first, mode, shard)
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(1)
        time.sleep(float(delay))
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        print("killed" if killed else f"died {status}", flush=True)


if __name__ == "__main__":
    main()
