"""Capability declarations shared by the kernels written in plain PyTorch."""

from __future__ import annotations

from collections.abc import Iterable

from specs.attention import FEATURES, KernelCaps

FLOAT_DTYPES = frozenset({"float64", "float32", "bfloat16", "float16"})
TORCH_DEVICES = frozenset({"cpu", "cuda", "mps"})


def torch_kernel_caps(*, lacking: Iterable[str] = ()) -> KernelCaps:
    """Every feature of :data:`specs.attention.FEATURES` on every float dtype and PyTorch device, except
    ``lacking``."""
    lacking = frozenset(lacking)
    unknown = lacking - FEATURES.keys()
    if unknown:
        raise ValueError(f"unknown kernel features: {sorted(unknown)}")
    return KernelCaps(dtypes=FLOAT_DTYPES, devices=TORCH_DEVICES, features=frozenset(FEATURES) - lacking)
