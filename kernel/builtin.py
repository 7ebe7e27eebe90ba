"""Registers the kernels that need nothing beyond PyTorch. Imported once by ``kernel/__init__``."""

from kernel import manual, sdpa
from kernel.registry import register

register("manual", manual.attention, manual.CAPS)  # the oracle: correct everywhere, never fast
register("sdpa", sdpa.attention, sdpa.CAPS, preference=1)
