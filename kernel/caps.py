"""Capability declarations of the built-in kernels (none of this imports a kernel or Triton)."""

from __future__ import annotations

import os
from collections.abc import Iterable

from specs.attention import FEATURES, KernelCaps

FLOAT_DTYPES = frozenset({"float64", "float32", "bfloat16", "float16"})
TORCH_DEVICES = frozenset({"cpu", "cuda", "mps"})
# What triton_flash cannot serve: arbitrary masks need a (B, H, Tq, Tk) read per tile, dropout an RNG stream
# the backward can replay, paged keys a gather through the block table; "auto" routes such calls elsewhere.
TRITON_FLASH_LACKS = frozenset({"allow_mask", "dropout", "paged"})
TRITON_FLASH_HEAD_DIMS = frozenset({16, 32, 64, 128})
# The spellings Triton itself reads as true (its knobs' getenv_bool), so the capability and the kernels agree.
_TRUE = frozenset({"1", "true", "on", "yes", "y"})


def torch_kernel_caps(*, lacking: Iterable[str] = ()) -> KernelCaps:
    """Every feature of :data:`specs.attention.FEATURES` on every float dtype and PyTorch device, except
    ``lacking``."""
    lacking = frozenset(lacking)
    unknown = lacking - FEATURES.keys()
    if unknown:
        raise ValueError(f"unknown kernel features: {sorted(unknown)}")
    return KernelCaps(dtypes=FLOAT_DTYPES, devices=TORCH_DEVICES, features=frozenset(FEATURES) - lacking)


def triton_interpreted() -> bool:
    """Whether ``TRITON_INTERPRET`` asks Triton for its CPU interpreter (read now, from the environment)."""
    return os.environ.get("TRITON_INTERPRET", "").lower() in _TRUE


def triton_flash_caps(*, interpreted: bool | None = None) -> KernelCaps:
    """CUDA, plus CPU tensors when Triton's interpreter is on (by default: ``TRITON_INTERPRET`` at the time this
    is read; the kernels are built in the same mode when they are first loaded)."""
    if interpreted is None:
        interpreted = triton_interpreted()
    devices = {"cuda", "cpu"} if interpreted else {"cuda"}
    return KernelCaps(
        dtypes=frozenset({"float32", "bfloat16", "float16"}),
        devices=frozenset(devices),
        features=frozenset(FEATURES) - TRITON_FLASH_LACKS,
        head_dims=TRITON_FLASH_HEAD_DIMS,
    )
