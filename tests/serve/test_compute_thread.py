"""The serving process computes in its backend's worker thread, with the intra-op threads the main thread gave
up (``serve/compute_thread.py`` says why: measured 1.4x faster decoding on two cores)."""

from __future__ import annotations

import torch

import serve
from serve.compute_thread import start_compute_thread


def test_the_worker_takes_the_threads_the_main_thread_gives_up():
    before = torch.get_num_threads()
    try:
        handed = serve.hand_threads_to_workers()
        assert handed == before and torch.get_num_threads() == 1
        seen: list[int] = []
        start_compute_thread(lambda: seen.append(torch.get_num_threads()), name="test-worker", threads=3).join()
        assert seen == [3]
        assert torch.get_num_threads() == 1  # the main thread keeps its one thread
    finally:
        torch.set_num_threads(before)
