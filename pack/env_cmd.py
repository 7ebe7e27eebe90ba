"""``lmplanes env``: what this installation runs on, for bug reports and CI logs.

Versions are read from package metadata where possible, so reporting Triton never imports it (Triton is
reached only inside ``kernel``). torch and the kernel registry are imported here, lazily, when the report
is made, so the other subcommands start without loading torch.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import platform
import sys
from typing import Any

NOT_INSTALLED = "not installed"


def register(commands: Any) -> None:
    """Add ``env`` to the ``lmplanes`` subparsers."""
    env = commands.add_parser(
        "env",
        help="print versions, devices and registered kernels",
        description="Print the versions of lmplanes, Python, torch and its companions, the CUDA devices, and the "
        "registered attention kernels: what to paste into a bug report.",
    )
    env.set_defaults(run=run_env)


def run_env(args: argparse.Namespace) -> int:
    """Print one ``key: value`` line per fact."""
    facts = collect()
    width = max(len(key) for key in facts) + 2
    for key, value in facts.items():
        print(f"{key + ':':<{width}}{value}")
    return 0


def collect() -> dict[str, str]:
    """The facts ``lmplanes env`` prints, in order."""
    facts = {
        "lmplanes": lmplanes_version(),
        "python": f"{platform.python_version()} ({platform.python_implementation()}) {sys.executable}",
        "platform": platform.platform(),
    }
    facts.update(_torch_facts())
    for dist in ("triton", "safetensors", "pydantic", "numpy"):
        facts[dist] = distribution_version(dist)
    facts["kernels"] = _kernels()
    return facts


def lmplanes_version() -> str:
    """The installed lmplanes version, or a note that this checkout is not installed."""
    version = distribution_version("lmplanes")
    return version if version != NOT_INSTALLED else "unknown (not installed; pip install -e .)"


def distribution_version(name: str) -> str:
    """A distribution's version from its metadata, without importing it."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return NOT_INSTALLED


def _torch_facts() -> dict[str, str]:
    try:
        import torch
    except ImportError:
        return {"torch": NOT_INSTALLED, "cuda": "unknown (no torch)"}
    facts: dict[str, str] = {"torch": str(torch.__version__)}
    if torch.cuda.is_available():
        names = [f"{i}: {torch.cuda.get_device_name(i)}" for i in range(torch.cuda.device_count())]
        facts["cuda"] = f"available (CUDA {torch.version.cuda}); " + "; ".join(names)
    else:
        built = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "CPU-only build"
        facts["cuda"] = f"not available ({built})"
    return facts


def _kernels() -> str:
    try:
        import kernel
    except ImportError as exc:
        return f"unavailable ({exc})"
    names = kernel.available()
    return ", ".join(names) if names else "none registered"
