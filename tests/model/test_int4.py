"""Weight-only int4 (``model.quantize_int4``): the group rounding, Q4_1-made weights recovered exactly, the layer
against a float32 product with its own dequantized weight (fused CPU kernel and the fallback, chosen as the module
says), its portable state dict, and the quantizer's options and refusals. (Model-level checks shared with int8:
tests/model/test_quantize.py; SmolLM2's own Q4_1 codes: tests/model/test_gguf_smollm2.py.)

Tolerances. The layer computes in bfloat16: its input and output are rounded to bf16 (relative 2^-9 each), and
the kernel accumulates over a different order than a float32 GEMM. Against a float32 product of the same bf16
input and the layer's dequantized weight we allow ``1e-2 * max|y|`` (observed ~3e-3).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import model
import specs
from model.int4 import FUSED_MAX_ROWS, Int4Linear, quantize_weight_int4

KERNEL = torch.ops.aten._weight_int4pack_mm_for_cpu.default


class _Ops(TorchDispatchMode):
    """The ATen ops a block of code runs."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        self.seen.add(func)
        return func(*args, **(kwargs or {}))


def test_rounding_error_is_at_most_half_a_step_per_group() -> None:
    weight = torch.randn(16, 96, generator=torch.Generator().manual_seed(0))
    weight[3, 32:64] = 0.25  # a constant group
    codes, scales, mins = quantize_weight_int4(weight, 32)
    assert codes.dtype is torch.uint8 and codes.max() == 15 and codes.min() == 0 and scales.shape == (16, 3)
    rebuilt = (codes.float().reshape(16, 3, 32) * scales[..., None] + mins[..., None]).reshape(16, 96)
    assert ((weight - rebuilt).abs() <= scales.repeat_interleave(32, dim=1) / 2 + 1e-6).all()
    assert (codes[3, 32:64] == 0).all() and scales[3, 1] == 1.0 and torch.equal(rebuilt[3, 32:64], weight[3, 32:64])


def test_weights_made_by_q4_1_quantize_back_to_their_own_codes() -> None:
    """llama.cpp's Q4_1: ``w = q * d + m`` with fp16 ``d`` and ``m``, and every group holding its codes 0 and 15
    (its quantizer maps a group's minimum and maximum there). Dequantized to float32, they give back the same
    codes, minima and (to float32 rounding) scales: the int4 model computes with the file's own weights."""
    g = torch.Generator().manual_seed(1)
    codes = torch.randint(0, 16, (32, 128), generator=g, dtype=torch.uint8)
    codes[:, 0::32], codes[:, 1::32] = 0, 15
    d = (torch.rand(32, 4, generator=g) * 0.05 + 1e-3).half().float()
    m = (-torch.rand(32, 4, generator=g) * 0.4).half().float()
    weight = (codes.float().reshape(32, 4, 32) * d[..., None] + m[..., None]).reshape(32, 128)
    got_codes, scales, mins = quantize_weight_int4(weight, 32)
    assert torch.equal(got_codes, codes) and torch.equal(mins, m)
    torch.testing.assert_close(scales, d, rtol=1e-6, atol=0)


@pytest.mark.parametrize(
    ("out_features", "rows", "fused"),
    [(48, (1, 1), True), (48, (4, 16), True), (48, (5, 13), False), (40, (1, 1), False)],
    ids=["one-row", "64-rows", "a-prompt-of-65-rows", "out-features-not-a-multiple-of-16"],
)
@pytest.mark.parametrize("bias", [False, True])
def test_layer_equals_the_float_product_of_its_dequantized_weight(
    out_features: int, rows: tuple[int, int], fused: bool, bias: bool
) -> None:
    """Up to FUSED_MAX_ROWS rows run the fused kernel; more rows, or a layer it cannot pack (40 output features:
    it packs rows in sixteens), the GEMM on the dequantized weight."""
    torch.manual_seed(0)
    linear = nn.Linear(64, out_features, bias=bias)
    layer = Int4Linear(linear)
    x = torch.randn(*rows, 64)
    with _Ops() as ops:
        y = layer(x)
    assert (KERNEL in ops.seen) is fused and (rows[0] * rows[1] <= FUSED_MAX_ROWS or not fused)
    assert y.dtype is torch.bfloat16 and y.shape == (*rows, out_features)
    b = None if linear.bias is None else linear.bias.bfloat16().float()
    reference = F.linear(x.bfloat16().float(), layer.dequantized_weight(), b)
    assert (y.float() - reference).abs().max() <= 1e-2 * reference.abs().max()
    with pytest.raises(ValueError, match="takes 64 input features"):
        layer(torch.randn(1, 65))


def test_dequantized_weight_is_the_float_weight_within_bfloat16_scales() -> None:
    """The group's scale and offset are bf16: a weight moves by at most the rounding step plus 2^-8 of the range."""
    linear = nn.Linear(128, 32)
    layer = Int4Linear(linear, group_size=64)
    w = linear.weight.detach()
    ranges = w.reshape(32, 2, 64).amax(-1) - w.reshape(32, 2, 64).amin(-1)
    bound = (ranges / 30 + ranges / 2**7 + w.reshape(32, 2, 64).abs().amax(-1) / 2**8).repeat_interleave(64, dim=1)
    assert ((layer.dequantized_weight() - w).abs() <= bound).all()


def test_state_dict_is_portable_and_reloads_the_kernel_layout() -> None:
    """The state dict holds codes (two to a byte) and bf16 scales/zeros, never the kernel's own layout; loading it
    into another layer rebuilds that layout, so both compute the same."""
    torch.manual_seed(2)
    source, target = Int4Linear(nn.Linear(64, 32)), Int4Linear(nn.Linear(64, 32))
    state = source.state_dict()
    assert set(state) == {"weight_int4", "scales_and_zeros", "bias"}
    assert state["weight_int4"].shape == (32, 32) and state["scales_and_zeros"].shape == (2, 32, 2)
    target.load_state_dict(state)
    x = torch.randn(1, 64)
    assert torch.equal(target(x), source(x))
    assert torch.equal(target.codes()[:, :2], torch.stack([state["weight_int4"][:, 0] & 15, state["weight_int4"][:, 0] >> 4], 1))


def _tiny(*overrides: str) -> nn.Module:
    cfg = specs.apply_overrides(specs.load_preset("llama-tiny"), ["init_std=0.1", "mlp.hidden=192", *overrides])
    torch.manual_seed(0)
    return model.build(cfg).eval()


@pytest.mark.parametrize(("head", "layer"), [("int8", model.Int8Linear), ("int4", Int4Linear), ("float", nn.Linear)])
def test_the_output_head_is_quantized_as_asked(head: str, layer: type) -> None:
    quantized = model.quantize_int4(_tiny(), head=head)
    assert type(quantized.lm_head) is layer and isinstance(quantized.layers[0].mlp.w2, Int4Linear)
    if head == "float":
        assert quantized.lm_head.weight.dtype is torch.bfloat16


def test_refusals_name_the_problem() -> None:
    with pytest.raises(ValueError, match=r"group_size 32 does not divide .*layers\.0\.mlp\.w2 \(in_features 176\).*"
                                         r"layers\.1\.mlp\.w2"):
        model.quantize_int4(_tiny("mlp.hidden=176"))
    with pytest.raises(ValueError, match="compute in bfloat16"):
        model.quantize_int4(_tiny(), compute_dtype=torch.float32)
    with pytest.raises(ValueError, match="group_size must be one of"):
        model.quantize_int4(_tiny(), group_size=48)
    with pytest.raises(ValueError, match="head must be"):
        model.quantize_int4(_tiny(), head="int2")
    with pytest.raises(ValueError, match="not a multiple of group_size"):
        quantize_weight_int4(torch.zeros(16, 40), 32)
