"""Weight-only int8 (``model.quantize_int8``; the model-level checks also for int4, ``model.quantize_int4``): the rounding, the layer against a float32 product with the same
dequantized weights (fused CPU kernel and the generic path), a quantized model's cached decoding against its
own full forward, and its logits against the unquantized model's. (SmolLM2-135M-Instruct in int8, through ``lmplanes generate``
and ``serve``: tests/serve/test_gguf_commands.py.)

Tolerances. The layer computes in bfloat16: its inputs are rounded to bf16 (relative 2^-9) and its output too,
so against a float32 product of the same bf16 input and dequantized weight we allow ``2e-2 * max|y|`` (observed
~4e-3). A quantized model against the float32 one: int8 rounding moves each weight by up to half a step
(1/254 of its row's largest), and bf16 activations add their own noise; the logits keep a cosine similarity
above 0.999 on a random llama-tiny (observed ~0.9999).
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import model
import serve
import specs
from model.quantize import Int8Linear, fused_kernel_applies, int8_matmul, quantize_weight


def test_rounding_error_is_at_most_half_a_step_per_row() -> None:
    weight = torch.randn(33, 70, generator=torch.Generator().manual_seed(0))
    weight[5] = 0.0
    q, scales = quantize_weight(weight)
    assert q.dtype is torch.int8 and q.abs().max() == 127 and scales.shape == (33,)
    error = (weight - q.float() * scales[:, None]).abs()
    assert (error <= scales[:, None] / 2 + 1e-7).all()
    assert (q[5] == 0).all() and scales[5] == 1.0  # an all-zero row quantizes to zeros, no division by zero
    with pytest.raises(ValueError, match="out_features, in_features"):
        quantize_weight(torch.zeros(4))


@pytest.mark.parametrize(
    ("in_features", "rows", "fused"),
    [(64, (2, 3), True), (40, (2, 3), False), (64, (4, 8), False)],
    ids=["fused-kernel", "width-not-a-multiple-of-16", "a-prompt-of-32-rows"],
)
@pytest.mark.parametrize("bias", [False, True])
def test_layer_equals_the_float_product_of_its_dequantized_weight(
    in_features: int, rows: tuple[int, int], fused: bool, bias: bool
) -> None:
    """40 input features is not a multiple of 16: the fused kernel would read past each row, so it must not run;
    32 rows are past FUSED_MAX_ROWS, so they take the GEMM on the dequantized weight."""
    torch.manual_seed(0)
    linear = nn.Linear(in_features, 48, bias=bias)
    layer = Int8Linear(linear)
    x = torch.randn(*rows, in_features)
    assert fused_kernel_applies(x.bfloat16(), layer.weight_int8) is fused
    y = layer(x)
    assert y.dtype is torch.bfloat16 and y.shape == (*rows, 48)
    reference = F.linear(x.bfloat16().float(), layer.dequantized_weight(), None if linear.bias is None else linear.bias.bfloat16().float())
    assert (y.float() - reference).abs().max() <= 2e-2 * reference.abs().max()
    with pytest.raises(ValueError, match=f"takes {in_features} input features"):
        layer(torch.randn(2, in_features + 1))


def test_fused_and_generic_paths_agree() -> None:
    torch.manual_seed(1)
    q, scales = quantize_weight(torch.randn(96, 128))
    x = torch.randn(7, 128).bfloat16()
    fused = int8_matmul(x, q, scales.bfloat16())
    generic = F.linear(x.float(), q.float()) * scales.bfloat16().float()
    assert (fused.float() - generic).abs().max() <= 2e-2 * generic.abs().max()


# name -> (quantizer, the layer it makes, the least cosine similarity of its logits to the float model's).
# int4 rounds a weight by up to 1/30 of its group's range (int8: 1/254 of its row's largest). On random Gaussian
# weights that is noise of ~8% of a weight's size (a group of 32 spans ~4 sigma, 15 steps, uniform rounding:
# 4/15/sqrt(12) = 0.08), which over llama-tiny's seven linears in a row leaves a cosine near 0.97 (observed
# 0.968-0.978). Trained weights fare better (SmolLM2: tests/model/test_gguf_smollm2.py); the int4 layers
# themselves are checked tightly against their dequantized weights in tests/model/test_int4.py.
QUANTIZERS = {"int8": (model.quantize_int8, Int8Linear, 0.999), "int4": (model.quantize_int4, model.Int4Linear, 0.95)}


@pytest.fixture(scope="module", params=sorted(QUANTIZERS))
def tiny_pair(request) -> tuple[nn.Module, nn.Module, str]:
    """llama-tiny with an MLP width of 192 (its preset's 176 is not a multiple of int4's groups of 32)."""
    cfg = specs.apply_overrides(specs.load_preset("llama-tiny"), ["init_std=0.1", "mlp.hidden=192"])
    torch.manual_seed(0)
    lm = model.build(cfg).eval()
    quantize = QUANTIZERS[request.param][0]
    return lm, quantize(copy.deepcopy(lm)), request.param


def test_every_linear_is_quantized_and_nothing_trains(tiny_pair) -> None:
    """int4 leaves the output head in int8 (its default): a head rounded to 4 bits costs the most quality."""
    lm, quantized, kind = tiny_pair
    quantize, layer = QUANTIZERS[kind][:2]
    linears = [name for name, m in lm.named_modules() if isinstance(m, nn.Linear)]
    expected = {name: Int8Linear if name == "lm_head" else layer for name in linears}
    assert linears and all(type(quantized.get_submodule(name)) is expected[name] for name in linears)
    assert not any(isinstance(m, nn.Linear) for m in quantized.modules())
    assert all(not p.requires_grad and p.dtype is torch.bfloat16 for p in quantized.parameters())
    assert quantize(quantized) is quantized  # again: nothing left to quantize


def test_logits_stay_close_to_the_float_models(tiny_pair) -> None:
    lm, quantized, kind = tiny_pair
    ids = torch.randint(0, lm.config.vocab_size, (2, 24), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref, got = lm(ids), quantized(ids).float()
    assert F.cosine_similarity(ref.flatten(1), got.flatten(1)).min() > QUANTIZERS[kind][2]


def test_cached_decoding_equals_its_own_full_forward(tiny_pair) -> None:
    """bf16 throughout: the cached steps and the full forward round differently, hence the bf16-level bound."""
    _, quantized, _ = tiny_pair
    ids = torch.randint(0, quantized.config.vocab_size, (2, 20), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        full = quantized(ids).float()
        cache = quantized.new_cache(2, 20)
        assert cache.layout.dtype == "bfloat16"
        steps = [quantized(ids[:, :8], cache=cache)] + [quantized(ids[:, t : t + 1], cache=cache) for t in range(8, 20)]
    cached = torch.cat(steps, dim=1).float()
    assert (cached - full).abs().max() <= 3e-2 * full.abs().max()
    out = serve.generate(quantized, ids[:1, :8], specs.GenerationConfig(max_new_tokens=6))
    assert out.shape == (1, 14)
