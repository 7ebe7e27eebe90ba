"""Attention kernels behind one registry: ``manual`` (the oracle), ``sdpa`` (PyTorch SDPA), and ``"auto"``.

Every kernel takes a :class:`specs.AttentionCall` and returns ``(B, Hq, Tq, D)``. Kernels are reached only
through :mod:`kernel.registry`; importing this package registers the built-in kernels but selects none.
"""

from kernel import builtin  # noqa: F401  (importing builtin registers "manual" and "sdpa")
from kernel.registry import (
    KernelUnavailable,
    auto_choices,
    available,
    capabilities,
    explain,
    register,
    resolve,
    use_kernel,
)

__all__ = [
    "KernelUnavailable",
    "auto_choices",
    "available",
    "capabilities",
    "explain",
    "register",
    "resolve",
    "use_kernel",
]
