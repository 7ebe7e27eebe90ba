"""ONNX export of a :class:`specs.CausalLM`: one graph for prefill and cached decoding.

``model.onnx`` is :class:`export.traced.DecodeStep` traced by ``torch.onnx.export(..., dynamo=True)``: inputs
``input_ids (batch, seq)`` and ``past_key_values.{i}.key/.value (batch, kv_heads, past, head_dim)``, outputs
``logits (batch, seq, vocab)`` and ``present.{i}.key/.value (batch, kv_heads, past + seq, head_dim)``, with
``batch``, ``seq`` and ``past`` dynamic. A prefill feeds ``past = 0`` tensors; each decode step feeds the
presents of the step before.

Why the dynamo exporter: it traces with ``torch.export`` (the same graph as the ``.pt2`` program), takes named
dynamic dims and checks them (an export that would bake a size in fails instead of producing a graph that is
wrong at other sizes), and runs the cache's Python at trace time. The TorchScript exporter (``dynamo=False``)
is deprecated since torch 2.9 and would trace through ``torch.jit``, which records one path through Python
control flow without telling. The dynamo exporter needs ``onnxscript``.

After writing, the file is checked with ``onnx.checker`` and run in onnxruntime against the PyTorch model on
a prefill and a decode step; the largest difference of the logits goes into the card's metrics
(``onnx_max_abs_diff``), and an export that differs by more than ``atol`` times the largest ``|logit|`` (at
least 1) is refused: float32 rounding differences grow with the magnitude of what is summed (measured:
SmolLM2-135M, 30 layers, 6.3e-5; the 2-layer test model, ~2e-7).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from export.artifact import CardFields, export_directory, weights_dtype
from export.traced import DecodeStep, empty_past, past_names, present_names
from specs.model_config import ModelConfig

ONNX_NAME = "model.onnx"
ATOL = 1e-4  # float32, relative to the logits' scale: the same arithmetic in ONNX Runtime's kernel order


def export_onnx(
    lm: nn.Module, out: str | os.PathLike[str], *, card: CardFields | None = None, overwrite: bool = False,
    opset: int | None = None, atol: float = ATOL,
) -> Path:
    """Write ``out/model.onnx`` (see the module) with its config, card and manifest; return ``out``."""
    step = DecodeStep(lm).eval()
    cfg = step.cfg
    sample = _sample(cfg, lm)
    dims = _dynamic_shapes(cfg)
    with export_directory(out, cfg, kind="onnx", dtype=weights_dtype(lm), card=card, overwrite=overwrite) as work:
        path = work.path / ONNX_NAME
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's deprecation chatter about its own internals
            program = torch.onnx.export(
                step, sample, input_names=["input_ids", *past_names(cfg.n_layers)],
                output_names=["logits", *present_names(cfg.n_layers)], dynamic_shapes=dims, dynamo=True,
                opset_version=opset, verbose=False,
            )
        if program is None:  # only the TorchScript exporter returns nothing
            raise RuntimeError("torch.onnx.export returned no program")
        program.save(str(path))
        check_onnx(path)
        diff, peak = parity(path, step, cfg)
        if diff > atol * max(1.0, peak):
            raise RuntimeError(f"the ONNX graph's logits differ from PyTorch's by {diff:.3g} (> {atol:g} x "
                               f"{max(1.0, peak):.3g}, the largest |logit|); not exported")
        work.metrics["onnx_max_abs_diff"] = diff
    return Path(out)


def check_onnx(path: Path) -> None:
    """``onnx.checker`` on the file (by path, so graphs with external data over 2 GB are checked too)."""
    import onnx

    onnx.checker.check_model(str(path), full_check=True)


def parity(path: Path, step: DecodeStep, cfg: ModelConfig) -> tuple[float, float]:
    """Largest ``|logits|`` difference between onnxruntime and PyTorch over a 5-token prefill of 2 rows and a
    3-token cached step after it (present tensors fed back, as a decoder does), and the largest ``|logit|``."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    gen = torch.Generator().manual_seed(0)
    dtype = next(iter(step.lm.parameters())).dtype
    past = empty_past(cfg, 2, dtype=dtype)
    worst = peak = 0.0
    for length in (5, 3):
        ids = torch.randint(0, cfg.vocab_size, (2, length), generator=gen)
        with torch.no_grad():
            want = step(ids, *past)
        got = run_session(session, ids, past)
        worst = max(worst, float(np.abs(got[0] - want[0].numpy()).max()))
        peak = max(peak, float(want[0].abs().max()))
        past = list(want[1:])
    return worst, peak


def run_session(session: object, input_ids: torch.Tensor, past: list[torch.Tensor]) -> list[np.ndarray]:
    """One call of an ``onnxruntime.InferenceSession`` over ``model.onnx``: ``[logits, *present]`` as arrays."""
    names = [i.name for i in session.get_inputs()]  # type: ignore[attr-defined]
    feeds = dict(zip(names, [input_ids.numpy(), *(t.numpy() for t in past)]))
    return session.run(None, feeds)  # type: ignore[attr-defined]


def _sample(cfg: ModelConfig, lm: nn.Module) -> tuple[torch.Tensor, ...]:
    """Example inputs for the trace: sizes distinct from each other and from the model's fixed dims and above 1
    (``torch.export`` specialises sizes 0 and 1, and would unify equal ones it cannot tell apart)."""
    past_len, seq = (5, 7) if cfg.max_seq_len >= 12 else (2, 3)
    ids = torch.randint(0, cfg.vocab_size, (3, seq))
    dtype = next(iter(lm.parameters())).dtype
    past = [torch.randn(t.shape, dtype=dtype) for t in empty_past(cfg, 3, past_len, dtype=dtype)]
    return (ids, *past)


def _dynamic_shapes(cfg: ModelConfig) -> dict[str, object]:
    batch = torch.export.Dim("batch", min=1, max=1024)
    seq = torch.export.Dim("seq", min=1, max=cfg.max_seq_len)
    past = torch.export.Dim("past", min=0, max=cfg.max_seq_len - 1)
    return {"input_ids": {0: batch, 1: seq}, "past": tuple({0: batch, 2: past} for _ in range(2 * cfg.n_layers))}
