"""Transparent huge pages for PyTorch's large CPU allocations, in the commands that decode.

A decode step reads every weight once; with 4 KiB pages a model of 150 MB spans ~38,000 pages, far more than
the TLB holds, so each page costs a table walk. PyTorch backs CPU allocations of 2 MiB and more with huge pages
(aligned, ``madvise(MADV_HUGEPAGE)``) when ``THP_MEM_ALLOC_ENABLE=1`` is set before its allocator first runs. On
the benchmark host that made our compiled llama-55m float32 decoding 3-6% faster and transformers' 0-3% (pairs of
runs with the setting on and off for both contenders; BENCHMARKS.md), with the same peak memory (SmolLM2
``generate``: 1.21 GB either way). A value the user set is kept (``THP_MEM_ALLOC_ENABLE=0`` turns it off), and
the kernel must allow it (``/sys/kernel/mm/transparent_hugepage/enabled`` not ``never``). A Python program that
imports ``serve`` sets the variable itself before importing torch.
"""

from __future__ import annotations

import os
import sys

VARIABLE = "THP_MEM_ALLOC_ENABLE"


def enable() -> bool:
    """Ask for huge pages unless the user chose; returns whether the setting can still take effect (PyTorch
    reads it once: after ``torch`` is imported it is too late)."""
    if "torch" in sys.modules:
        return False
    os.environ.setdefault(VARIABLE, "1")
    return True
