"""Per-layer attention options: which projections carry a bias, the logit scale, and the window of each layer
(sliding layers between global ones), as they reach the kernel's ``AttentionCall``; and the build-time refusal
of a named kernel that lacks a feature the config always needs.

Float32; ``ATOL = 1e-5``: the scale check compares two routes to the same logits (a scale in the call versus
the same factor folded into ``wq``), which round differently; outputs reach ~10 here (ulp ~1e-6) and the
observed worst case is ~3e-6, while a missing scale is off by > 1e-2.
"""

from __future__ import annotations

import math

import pytest
import torch

import attn.self_attention
import kernel
import model
import specs
from attn import SelfAttention
from kernel.registry import KernelUnavailable

ATOL = 1e-5
C = 32


def _layer(layer_idx: int = 0, **attention) -> SelfAttention:
    torch.manual_seed(0)
    layer = SelfAttention(specs.AttentionConfig(**{"n_heads": 4, **attention}), C, layer_idx=layer_idx).eval()
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_(0.0, 0.3)
    return layer


def _x(t: int = 7) -> torch.Tensor:
    return torch.randn(2, t, C, generator=torch.Generator().manual_seed(5))


def test_qwen2_biases_on_q_k_v_but_not_the_output() -> None:
    layer = _layer(bias=True, out_bias=False, n_kv_heads=2)
    assert all(getattr(layer, w).bias is not None for w in ("wq", "wk", "wv"))
    assert layer.wo.bias is None
    assert _layer(bias=False, out_bias=True).wo.bias is not None
    assert _layer(bias=True).wo.bias is not None  # out_bias None follows bias


@torch.no_grad()
def test_scale_multiplies_the_logits() -> None:
    """A scale ``s`` equals the default ``1/sqrt(D)`` with ``wq`` multiplied by ``s * sqrt(D)``."""
    scaled = _layer(scale=0.5)
    plain = _layer()
    plain.wq.weight.mul_(0.5 * math.sqrt(scaled.head_dim))
    for name in ("manual", "sdpa"):
        with kernel.use_kernel(name):
            torch.testing.assert_close(scaled(_x()), plain(_x()), atol=ATOL, rtol=0.0)
    assert (scaled(_x()) - _layer()(_x())).abs().max() > 1e-2


def test_each_layer_hands_its_window_and_the_scale_to_the_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    """Gemma's pattern: with ``global_every=3`` layers 2 and 5 are global, the others slide."""
    seen: list[specs.AttentionCall] = []
    attend = attn.self_attention.attend

    def recording(kernel_name: str, call: specs.AttentionCall) -> torch.Tensor:
        seen.append(call)
        return attend(kernel_name, call)

    monkeypatch.setattr(attn.self_attention, "attend", recording)
    cfg = specs.apply_overrides(
        specs.load_config("llama-tiny"),
        ["n_layers=6", "attention.window=3", "attention.global_every=3", "attention.scale=0.2", "attention.softcap=20"],
    )
    m = model.build(cfg).eval()
    with torch.no_grad():
        m(torch.zeros(1, 5, dtype=torch.long))
    assert [call.window for call in seen] == [3, 3, None, 3, 3, None]
    assert [layer.attn.window for layer in m.layers] == [3, 3, None, 3, 3, None]
    assert {call.scale for call in seen} == {0.2} and {call.softcap for call in seen} == {20.0}


def test_a_named_kernel_lacking_softcap_is_refused_when_built() -> None:
    cfg = specs.apply_overrides(specs.load_config("llama-tiny"), ["attention.softcap=50", "attention.kernel=sdpa"])
    with pytest.raises(KernelUnavailable, match=r"'sdpa' lacks softcap.*kernels that have it: manual"):
        model.build(cfg)
    model.build(specs.apply_overrides(cfg, ["attention.kernel=manual"]))  # and the capable one builds
