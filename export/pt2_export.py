"""``torch.export`` programs of a :class:`specs.CausalLM`, saved as ``.pt2`` files.

``model.pt2`` is the plain forward (:class:`export.traced.Logits`: ``input_ids (batch, seq) -> logits``) and
``decode.pt2`` the functional cached step (:class:`export.traced.DecodeStep`, the same signature as the ONNX
graph), both with dynamic ``batch`` and ``seq`` (and ``past``). ``torch.export.load(path).module()`` runs them
without any lmplanes code. The programs are reloaded after saving and compared with the PyTorch model; the
largest difference goes into the card (``pt2_max_abs_diff``) and one above ``atol`` refuses the export.

The dynamic ``past`` dim is declared from 0 (a prefill through ``decode.pt2`` feeds empty past tensors) while
the trace's example has 5 past tokens: ``torch.export`` would specialise an example of size 0 or 1. The
programs hold the weights (``torch.export.save`` writes them into the archive).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from export.artifact import CardFields, export_directory, weights_dtype
from export.traced import DecodeStep, Logits, empty_past

PROGRAM_NAME = "model.pt2"
DECODE_NAME = "decode.pt2"
ATOL = 1e-5  # float32; the program runs the same ATen kernels as eager PyTorch, so 0 is what we see


def export_pt2(
    lm: nn.Module, out: str | os.PathLike[str], *, card: CardFields | None = None, overwrite: bool = False,
    atol: float = ATOL,
) -> Path:
    """Write ``out/model.pt2`` and ``out/decode.pt2`` (see the module) with config, card and manifest."""
    forward = Logits(lm).eval()
    step = DecodeStep(lm).eval()
    cfg = step.cfg
    with export_directory(out, cfg, kind="pt2", dtype=weights_dtype(lm), card=card, overwrite=overwrite) as work:
        batch = torch.export.Dim("batch", min=1, max=1024)
        seq = torch.export.Dim("seq", min=1, max=cfg.max_seq_len)
        past = torch.export.Dim("past", min=0, max=cfg.max_seq_len - 1)
        past_len, length = (5, 7) if cfg.max_seq_len >= 12 else (2, 3)
        dtype = next(iter(lm.parameters())).dtype
        ids = torch.randint(0, cfg.vocab_size, (3, length))
        past_kv = [torch.randn(t.shape, dtype=dtype) for t in empty_past(cfg, 3, past_len, dtype=dtype)]
        with torch.no_grad():
            programs = {
                PROGRAM_NAME: (forward, torch.export.export(
                    forward, (ids,), dynamic_shapes={"input_ids": {0: batch, 1: seq}}, strict=False)),
                DECODE_NAME: (step, torch.export.export(
                    step, (ids, *past_kv), strict=False, dynamic_shapes={
                        "input_ids": {0: batch, 1: seq}, "past": tuple({0: batch, 2: past} for _ in past_kv)})),
            }
        for name, (_, program) in programs.items():
            torch.export.save(program, str(work.path / name))
        diff = 0.0
        gen = torch.Generator().manual_seed(0)
        check_ids = torch.randint(0, cfg.vocab_size, (2, 4), generator=gen)
        check_past = [torch.randn(t.shape, generator=gen, dtype=dtype) for t in empty_past(cfg, 2, 3, dtype=dtype)]
        for name, (module, _) in programs.items():
            inputs = (check_ids,) if name == PROGRAM_NAME else (check_ids, *check_past)
            loaded = torch.export.load(str(work.path / name)).module()
            with torch.no_grad():
                want, got = module(*inputs), loaded(*inputs)
            want, got = (want,) if isinstance(want, torch.Tensor) else want, (got,) if isinstance(got, torch.Tensor) else got
            diff = max(diff, *(float((a - b).abs().max()) for a, b in zip(want, got)))
        if diff > atol:
            raise RuntimeError(f"the reloaded programs differ from PyTorch by {diff:.3g} (> {atol:g}); not exported")
        work.metrics["pt2_max_abs_diff"] = diff
    return Path(out)
