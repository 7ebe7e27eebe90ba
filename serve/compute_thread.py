"""The thread a backend computes in, and the intra-op threads it runs with.

A backend decodes in one worker thread so that the event loop stays free. With GNU OpenMP (PyTorch's CPU
threading) that thread is slow when another thread already owns an OpenMP team: once more OpenMP threads exist
than cores, libgomp stops its workers spinning between parallel regions, so every region of the worker wakes
sleeping threads. Measured on 2 cores (Intel Xeon, torch 2.13): an elementwise add of 128k floats 52 us on the
first thread to use OpenMP, 130-145 us on a second one; continuous batching of llama-55m 450 tokens/s on the
main thread, 327 in a worker. So a process that serves computes nothing on its main thread: it calls
:func:`hand_threads_to_workers` before loading the model (loading then runs single-threaded), and each worker
takes the threads back when it starts (:func:`start_compute_thread`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import torch

_handed: dict[int, int] = {}  # thread id -> the intra-op threads it had before handing them over


def hand_threads_to_workers() -> int:
    """Make the calling thread (the main one) compute single-threaded, before it ever runs a parallel region,
    and return the intra-op thread count it had: what the workers should get (the same on every call)."""
    threads = _handed.setdefault(threading.get_ident(), torch.get_num_threads())
    torch.set_num_threads(1)
    return threads


def start_compute_thread(target: Callable[[], None], *, name: str, threads: int | None) -> threading.Thread:
    """Start a daemon thread that runs ``target`` with ``threads`` intra-op threads (None: as it inherits)."""

    def run() -> None:
        if threads is not None:
            torch.set_num_threads(threads)
        target()

    worker = threading.Thread(target=run, name=name, daemon=True)
    worker.start()
    return worker
