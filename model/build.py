"""From a ModelConfig to a module: built on the meta device, then materialised and initialised explicitly."""

from __future__ import annotations

import torch

from model.decoder import DecoderLM
from model.encoder import EncoderLM
from model.encoder_decoder import EncoderDecoderLM
from specs.model_config import ModelConfig

# Every model a ModelConfig can describe; ``build`` returns one of these, chosen by ``cfg.architecture``.
LanguageModel = DecoderLM | EncoderLM | EncoderDecoderLM
ARCHITECTURES: dict[str, type[DecoderLM] | type[EncoderLM] | type[EncoderDecoderLM]] = {
    "decoder": DecoderLM,
    "encoder": EncoderLM,
    "encoder_decoder": EncoderDecoderLM,
}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def build(
    cfg: ModelConfig, *, device: torch.device | str = "cpu", dtype: torch.dtype | None = None, init: bool = True
) -> LanguageModel:
    """Build the model ``cfg`` describes: a :class:`DecoderLM`, an :class:`EncoderLM` or an
    :class:`EncoderDecoderLM`, by ``cfg.architecture``.
    ``device="meta"`` allocates nothing; ``init=False`` leaves the weights uninitialised (for loading into).
    ``dtype`` defaults to ``cfg.dtype``."""
    if cfg.architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {cfg.architecture!r}; known: {', '.join(ARCHITECTURES)}")
    with torch.device("meta"):
        model = ARCHITECTURES[cfg.architecture](cfg).to(dtype or DTYPES[cfg.dtype])
    if torch.device(device).type == "meta":
        return model
    model = model.to_empty(device=device)
    model.tie_weights()
    if init:
        model.init_weights()
    return model


def count_parameters(cfg: ModelConfig) -> int:
    """Parameter count of the model ``cfg`` describes, without allocating it (tied weights counted once)."""
    return sum(p.numel() for p in build(cfg, device="meta").parameters())
