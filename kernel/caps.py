"""Capability declarations shared by the kernels written in plain PyTorch."""

from __future__ import annotations

from specs.attention import KernelCaps

FLOAT_DTYPES = frozenset({"float64", "float32", "bfloat16", "float16"})
TORCH_DEVICES = frozenset({"cpu", "cuda", "mps"})


def torch_kernel_caps(**lacking: bool) -> KernelCaps:
    """Every feature on every float dtype and PyTorch device, except those passed as ``name=False``."""
    features = dict(
        allow_mask=True,
        causal=True,
        q_offset=True,
        gqa=True,
        window=True,
        softcap=True,
        dropout=True,
        backward=True,
        kv_lens=True,
    )
    unknown = set(lacking) - set(features)
    if unknown:
        raise ValueError(f"unknown kernel features: {sorted(unknown)}")
    return KernelCaps(dtypes=FLOAT_DTYPES, devices=TORCH_DEVICES, **{**features, **lacking})
