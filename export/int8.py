"""Weight-only int8 checkpoints for CPU serving, measured against the float model they come from.

``export_int8(lm, out, quantize=model.quantize_int8, eval_ids=...)`` (the caller hands the quantizer over:
``export`` may not import ``model``):

1. plans: every ``nn.Linear`` is quantized (int8 weight, a symmetric scale per output row). Any other weight
   matrix (a MoE's batched experts, a convolution) cannot be: the export is refused with one line per such
   layer, or with ``keep_float=True`` those layers stay in the compute dtype and are listed in the marker.
   Embedding tables stay float by design (a lookup reads one row per token, so int8 saves no time);
2. measures the float model, quantizes a copy and measures it: perplexity on ``eval_ids`` (held-out text,
   tokenized by the caller), decode speed (tokens/s of greedy single-token steps on its KV cache, batch 1,
   after a 16-token prompt) and weight bytes;
3. writes a checkpoint directory ``model.load_checkpoint`` loads as an int8 model: ``model.safetensors`` (the
   quantized state dict), ``quantization.json`` (:mod:`specs.quantization`), ``config.json``, the card (with
   the measurements as metrics) and ``MANIFEST.json``. ``lmplanes generate|chat|serve --checkpoint`` serve it.
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, cast

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from export.artifact import CardFields, export_directory
from export.traced import check_exportable
from specs.protocols import CausalLM
from specs.quantization import QUANTIZATION_FORMAT, QUANTIZATION_NAME, QUANTIZATION_VERSION

WEIGHTS_NAME = "model.safetensors"


class Quantizer(Protocol):
    """What ``export_int8`` calls to quantize (``model.quantize_int8``): in place, returning the module."""

    def __call__(self, model: nn.Module, *, compute_dtype: torch.dtype = ...) -> nn.Module: ...


@dataclass(frozen=True, slots=True)
class Int8Report:
    """What :func:`export_int8` measured: float vs int8 weight bytes, perplexity on the held-out ids (None
    without them) and greedy decode tokens/s, plus the layers kept in float and why."""

    float_bytes: int
    int8_bytes: int
    ppl_float: float | None
    ppl_int8: float | None
    tokens_per_s_float: float
    tokens_per_s_int8: float
    kept: dict[str, str]

    def metrics(self) -> dict[str, float]:
        found = {
            "int8_size_ratio": self.int8_bytes / self.float_bytes,
            "decode_tokens_per_s_float": self.tokens_per_s_float,
            "decode_tokens_per_s_int8": self.tokens_per_s_int8,
        }
        if self.ppl_float is not None and self.ppl_int8 is not None:
            found |= {"ppl_float": self.ppl_float, "ppl_int8": self.ppl_int8, "ppl_delta": self.ppl_int8 - self.ppl_float}
        return found


def unquantizable(lm: nn.Module) -> dict[str, str]:
    """``{module name: reason}`` for each module holding a weight matrix that weight-only int8 cannot take."""
    found = {}
    for name, module in lm.named_modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            continue
        matrices = [p for p_name, p in module.named_parameters(recurse=False) if p.dim() >= 2]
        if matrices:
            shapes = ", ".join(str(list(p.shape)) for p in matrices)
            found[name] = (f"{type(module).__name__} holds {shapes} weights that are not an nn.Linear's (int8 here "
                           "quantizes nn.Linear only)")
    return found


def export_int8(
    lm: nn.Module, out: str | os.PathLike[str], *, quantize: Quantizer,
    eval_ids: torch.Tensor | None = None, keep_float: bool = False, card: CardFields | None = None,
    overwrite: bool = False, compute_dtype: torch.dtype = torch.bfloat16, decode_steps: int = 32,
) -> tuple[Path, Int8Report]:
    """Quantize a copy of ``lm`` with ``quantize(module, compute_dtype=...)`` and write it (see the module)."""
    cfg = check_exportable(lm)
    kept = unquantizable(lm)
    if kept and not keep_float:
        lines = "\n  ".join(f"{name}: {why}" for name, why in kept.items())
        raise ValueError(f"cannot quantize {len(kept)} layer(s) to int8; refusing (keep_float / --keep-float leaves "
                         f"them in {str(compute_dtype).removeprefix('torch.')}):\n  {lines}")
    quantized = [name for name, m in lm.named_modules() if isinstance(m, nn.Linear)]
    if not quantized:
        raise ValueError(f"{cfg.name or 'the model'} has no nn.Linear layers: nothing to quantize")
    float_bytes = _state_bytes(lm)
    ppl_float = perplexity(lm, eval_ids) if eval_ids is not None else None
    speed_float = decode_speed(lm, decode_steps)
    q = quantize(copy.deepcopy(lm), compute_dtype=compute_dtype)
    dtype_name = str(compute_dtype).removeprefix("torch.")
    with export_directory(out, cfg, kind="int8", dtype="int8", card=card, overwrite=overwrite) as work:
        save_file(_tensors(q), str(work.path / WEIGHTS_NAME), metadata={"format": "pt"})
        marker = {
            "format": QUANTIZATION_FORMAT, "version": QUANTIZATION_VERSION,
            "scheme": "weight-only int8, symmetric, one scale per output row", "compute_dtype": dtype_name,
            "quantized": quantized, "kept": kept,
        }
        (work.path / QUANTIZATION_NAME).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
        report = Int8Report(
            float_bytes=float_bytes, int8_bytes=(work.path / WEIGHTS_NAME).stat().st_size, ppl_float=ppl_float,
            ppl_int8=perplexity(q, eval_ids) if eval_ids is not None else None, tokens_per_s_float=speed_float,
            tokens_per_s_int8=decode_speed(q, decode_steps), kept=kept,
        )
        work.metrics.update(report.metrics())
    return Path(out), report


@torch.no_grad()
def perplexity(lm: nn.Module, ids: torch.Tensor, window: int | None = None) -> float:
    """``exp`` of the mean next-token cross-entropy (float32) of a 1-D token stream, cut into consecutive
    windows of ``window`` tokens (default: the model's ``max_seq_len``, at most 256)."""
    cfg = check_exportable(lm)
    window = window or min(cfg.max_seq_len, 256)
    ids = ids.reshape(-1)
    if ids.numel() < 2:
        raise ValueError("perplexity needs at least 2 tokens")
    total, count = 0.0, 0
    for start in range(0, ids.numel() - 1, window):
        chunk = ids[start : start + window + 1]
        if chunk.numel() < 2:
            break
        logits = lm(chunk[None, :-1]).float()
        total += float(F.cross_entropy(logits[0], chunk[1:], reduction="sum"))
        count += chunk.numel() - 1
    return math.exp(total / count)


@torch.no_grad()
def decode_speed(lm: nn.Module, steps: int, prompt: int = 16) -> float:
    """Greedy decode tokens/s at batch 1 after a ``prompt``-token prefill (the prefill is not timed), on the
    model's own KV cache (``new_cache``)."""
    cfg = check_exportable(lm)
    steps = min(steps, cfg.max_seq_len - prompt)
    cache = cast(CausalLM, lm).new_cache(1, prompt + steps)
    ids = torch.randint(0, cfg.vocab_size, (1, prompt), generator=torch.Generator().manual_seed(0))
    token = lm(ids, cache=cache)[:, -1:].argmax(-1)
    start = time.perf_counter()
    for _ in range(steps):
        token = lm(token, cache=cache)[:, -1:].argmax(-1)
    return steps / (time.perf_counter() - start)


def _state_bytes(module: nn.Module) -> int:
    """Bytes of a module's state dict, a tensor shared by several names (tied weights) counted once."""
    seen: dict[tuple[int, int], int] = {}
    for t in module.state_dict().values():
        seen[(t.untyped_storage().data_ptr(), t.storage_offset())] = t.numel() * t.element_size()
    return sum(seen.values())


def _tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict as safetensors wants it: contiguous, no two entries sharing memory."""
    out: dict[str, torch.Tensor] = {}
    storages: set[int] = set()
    for name, t in module.state_dict().items():
        t = t.detach()
        ptr = t.untyped_storage().data_ptr()
        out[name] = t.clone() if ptr in storages else t.contiguous()
        storages.add(ptr)
    return out
