"""specs.sizing on small configs whose figures are computed by hand here (no torch: the count against built
models is tests/model/test_preset_sizes.py)."""

from __future__ import annotations

import pytest

import specs
from specs.sizing import model_sizes, parameter_count, parameter_parts

# 2 layers, width 8, 2 query heads over 1 KV head of 4, SwiGLU 16, RMSNorm, untied, vocabulary 10, bfloat16;
# layer 0 slides over 4 tokens, layer 1 is global.
SMALL = {
    "kind": "model",
    "version": 4,
    "vocab_size": 10,
    "d_model": 8,
    "n_layers": 2,
    "max_seq_len": 16,
    "attention": {"n_heads": 2, "n_kv_heads": 1, "window": 4, "global_every": 2},
    "mlp": {"kind": "swiglu", "hidden": 16},
    "rope": {"theta": 10000.0},
    "dtype": "bfloat16",
}
# q 8*8 + k 8*4 + v 8*4 + o 8*8 = 192 per layer; SwiGLU 3*8*16 = 384 per layer; two norms of 8 per layer.
SMALL_PARTS = {"embeddings": 80, "attention": 2 * 192, "mlp": 2 * 384, "block_norms": 2 * 16, "final_norm": 8, "head": 80}
SMALL_COUNT = 1352


def small(**changes: object) -> specs.ModelConfig:
    return specs.apply_overrides(specs.from_dict(SMALL), [f"{key}={value}" for key, value in changes.items()])


def test_parts_and_count_by_hand() -> None:
    cfg = small()
    assert parameter_parts(cfg) == SMALL_PARTS
    assert parameter_count(cfg) == sum(SMALL_PARTS.values()) == SMALL_COUNT


def test_bfloat16_memory_by_hand() -> None:
    sizes = model_sizes(small())
    assert sizes.parameters == SMALL_COUNT and dict(sizes.parts) == SMALL_PARTS
    assert sizes.weight_bytes == sizes.gradient_bytes == 2 * SMALL_COUNT == 2704
    # two float32 moments plus a float32 master copy of the bfloat16 weights: 12 bytes a parameter
    assert sizes.fp32_master_copy and sizes.optimizer_bytes == 12 * SMALL_COUNT == 16224
    assert sizes.training_bytes == 2704 + 2704 + 16224
    # keys and values: 2 * 2 layers * 1 KV head * head dim 4 * 2 bytes
    assert sizes.kv_cache_bytes_per_token == 32 and sizes.kv_cache_bytes_per_row == 32 * 16
    assert (sizes.windowed_layers, sizes.window, sizes.n_layers) == (1, 4, 2)


def test_float32_memory_by_hand() -> None:
    sizes = model_sizes(small(dtype="float32"))
    assert sizes.weight_bytes == sizes.gradient_bytes == 4 * SMALL_COUNT
    assert not sizes.fp32_master_copy and sizes.optimizer_bytes == 8 * SMALL_COUNT  # the weights are the master
    assert sizes.kv_cache_bytes_per_token == 64


def test_float16_is_sized_as_bfloat16() -> None:
    assert model_sizes(small(dtype="float16")).to_dict() == {**model_sizes(small()).to_dict(), "dtype": "float16"}


@pytest.mark.parametrize(
    ("changes", "delta"),
    [
        ({"attention.bias": "true"}, 2 * (8 + 4 + 4 + 8)),  # q, k, v and o biases in both layers
        ({"attention.bias": "true", "attention.out_bias": "false"}, 2 * (8 + 4 + 4)),
        ({"attention.qk_norm": "true"}, 2 * (4 + 4)),  # a scale over the head dim for q and for k
        ({"attention.n_kv_heads": 2}, 2 * (2 * 8 * 4)),  # k and v grow by one head of 4
        ({"attention.head_dim": 8}, 2 * (8 * 8 + 2 * 8 * 4 + 8 * 8)),  # every projection doubles
        ({"mlp.bias": "true"}, 2 * (16 + 16 + 8)),  # gate, up, down
        ({"mlp.kind": "gelu"}, -2 * 8 * 16),  # no gate
        ({"mlp.hidden": "null"}, 2 * 3 * 8 * (32 - 16)),  # 4 * d_model
        ({"residual": "sandwich"}, 2 * 2 * 8),  # a norm on each branch's output
        ({"norm": "layernorm", "norm_bias": "true"}, 5 * 8),  # 4 block norms and the final norm gain a bias
        ({"final_norm": "false"}, -8),
        ({"tie_embeddings": "true"}, -80),
        ({"positions": "learned", "rope": "null"}, 16 * 8),
    ],
)
def test_each_term_by_hand(changes: dict[str, object], delta: int) -> None:
    assert parameter_count(small(**changes)) - SMALL_COUNT == delta


def test_encoder_terms_by_hand() -> None:
    encoder = small(
        architecture="encoder", head="mlm", type_vocab_size=2, embedding_norm="true", norm="layernorm",
        norm_bias="true", tie_embeddings="true", **{"mlp.bias": "true", "attention.window": "null",
                                                     "attention.global_every": "null"},
    )
    parts = parameter_parts(encoder)
    assert parts["token_types"] == 2 * 8 and parts["embedding_norm"] == 2 * 8
    # dense 8x8 with its bias, LayerNorm with bias, the decoder's own bias; its weight is the embeddings'
    assert parts["head"] == (64 + 8) + 16 + 10
    sizes = model_sizes(encoder)
    assert sizes.kv_cache_bytes_per_token is None and sizes.kv_cache_bytes_per_row is None
    untied = parameter_parts(specs.apply_overrides(encoder, ["tie_embeddings=false"]))
    assert untied["head"] - parts["head"] == 80
    headless = parameter_parts(specs.apply_overrides(encoder, ["head=none"]))
    assert "head" not in headless and parameter_count(encoder) - sum(headless.values()) == parts["head"]


def test_to_dict_is_plain_data() -> None:
    data = model_sizes(small()).to_dict()
    assert data["parts"] == SMALL_PARTS and data["training_bytes"] == 2704 + 2704 + 16224
    assert data["kv_cache_bytes_per_row"] == 512 and data["dtype"] == "bfloat16"
    assert all(isinstance(value, (int, str, bool, dict, type(None))) for value in data.values())


def test_presets_in_round_figures() -> None:
    """The seed's sizes: Gemma 3 1B is ~1.0B as published; the BERT encoder ~1.7B."""
    assert parameter_count(specs.load_preset("gemma3-1b")) == 999_885_952
    assert parameter_count(specs.load_preset("bert-1.7b")) == 1_679_261_498
    gemma = model_sizes(specs.load_preset("gemma3-1b"))
    assert gemma.kv_cache_bytes_per_token == 2 * 26 * 1 * 256 * 2  # bfloat16
    assert (gemma.windowed_layers, gemma.window) == (22, 512)  # layers 6, 12, 18, 24 (1-based) are global
