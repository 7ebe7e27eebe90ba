"""Registers the kernels lmplanes ships. Imported once by ``kernel/__init__``.

``triton_flash`` is registered only where Triton is installed, and by name: Triton is imported when the kernel
is first resolved, never by ``import kernel``.
"""

from importlib.util import find_spec

from kernel import manual, sdpa
from kernel.caps import triton_flash_caps
from kernel.registry import register

register("manual", manual.attention, manual.CAPS)  # the oracle: correct everywhere, never fast
register("sdpa", sdpa.attention, sdpa.CAPS, preference=1)


def register_triton_flash(*, replace: bool = False) -> bool:
    """Register ``triton_flash`` with the capabilities the environment gives it now (the CPU only under
    ``TRITON_INTERPRET=1``); False, registering nothing, where Triton is not installed."""
    if find_spec("triton") is None:
        return False
    register("triton_flash", "kernel.triton_flash:attention", triton_flash_caps(), replace=replace)
    return True


register_triton_flash()
