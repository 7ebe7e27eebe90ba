"""ONNX prefill + cached decoding in other families than Llama: GPT-2 (learned positions, LayerNorm, GELU, biases,
tied head) and a Gemma 2 style decoder (sliding-window layers decoded past their window, attention and final
soft-caps, sandwich norms, GeGLU, scaled embeddings). Each exports a graph of its own (~5-15 s), hence slow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

import export
import model
import specs
from export.onnx_export import run_session
from model.hf_gpt2 import GPT2Family

ATOL = 1e-4  # the bound for fp32; observed ~1e-6
GPT2 = dict(model_type="gpt2", n_embd=64, n_layer=2, n_head=4, n_positions=64, vocab_size=256, resid_pdrop=0.0,
            embd_pdrop=0.0, attn_pdrop=0.0)
GEMMA2_STYLE = [
    "n_layers=4", "attention.head_dim=32", "attention.window=5", "attention.global_every=2", "attention.softcap=4.0",
    "attention.scale=0.25", "residual=sandwich", "norm_weight_offset=1.0", "embedding_scale=8.0", "final_softcap=5.0",
    "mlp.kind=geglu", "mlp.gelu_approximate=tanh", "tie_embeddings=true",
]
CONFIGS = {
    "gpt2": lambda: GPT2Family().config_from_hf(GPT2, name="gpt2-tiny", dtype="float32"),
    "gemma2-style": lambda: specs.apply_overrides(specs.load_config("llama-tiny"), GEMMA2_STYLE),
}


@pytest.mark.slow
@pytest.mark.parametrize("family", CONFIGS)
def test_prefill_then_decode_past_the_window_equals_pytorch(family: str, tmp_path: Path) -> None:
    cfg = CONFIGS[family]()
    torch.manual_seed(0)
    lm = model.build(cfg).eval()
    with torch.no_grad():
        for p in lm.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    session = ort.InferenceSession(str(export.export_onnx(lm, tmp_path / "onnx") / "model.onnx"))
    ids = torch.randint(0, cfg.vocab_size, (2, 14), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = lm(ids).numpy()
    got = run_session(session, ids[:, :6], export.empty_past(cfg, 2))
    assert np.abs(got[0] - want[:, :6]).max() < ATOL
    for t in range(6, 14):  # positions 6..13: beyond the 5-token window of the Gemma style's local layers
        got = run_session(session, ids[:, t : t + 1], [torch.from_numpy(a) for a in got[1:]])
        assert np.abs(got[0][:, 0] - want[:, t]).max() < ATOL, f"{family}: decode step at position {t}"
