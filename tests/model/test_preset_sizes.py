"""The analytic parameter count of :mod:`specs.sizing` equals the model ``model.build`` makes, part by part:
for every preset (a new preset file is covered without touching this test) and for configs that switch on
each option the count has a term for. The two large presets are also checked against ``transformers``' own
models of the same architecture, built on the meta device (nothing is allocated or downloaded)."""

from __future__ import annotations

import re
from typing import Any

import pytest
import torch

import model
import specs
from model.hf import HF_FAMILIES

# Which part of specs.parameter_parts each parameter of our models belongs to (the first rule that matches).
# A family that adds modules adds its rules here and its terms in specs/sizing.py.
PART_OF = (
    (r"tok_embeddings\.", "embeddings"),
    (r"positions\.embedding\.", "positions"),
    (r"token_types\.", "token_types"),
    (r"embedding_norm\.", "embedding_norm"),
    (r"layers\.\d+\.attn\.", "attention"),
    (r"layers\.\d+\.cross_attn\.", "cross_attention"),
    (r"layers\.\d+\.mlp\.router\.", "router"),  # a MoE feed-forward's parts
    (r"layers\.\d+\.mlp\.experts\.", "experts"),
    (r"layers\.\d+\.mlp\.shared\.", "shared_experts"),
    (r"layers\.\d+\.mlp\.", "mlp"),
    (r"layers\.\d+\.\w+_norm\.", "block_norms"),
    (r"norm\.", "final_norm"),
    (r"(lm_head|mlm_head)\.", "head"),
)


def built_parts(cfg: specs.ModelConfig) -> dict[str, int]:
    """Parameters of the model built on the meta device, summed by part (tied weights listed once)."""
    parts: dict[str, int] = {}
    for name, param in model.build(cfg, device="meta").named_parameters():
        name = re.sub(r"^(encoder|decoder)\.", "", name)  # an encoder-decoder's sides have the same parts
        part = next((part for pattern, part in PART_OF if re.match(pattern, name)), None)
        if part is None:
            pytest.fail(f"parameter {name} belongs to no part: add a rule to PART_OF and its term to specs/sizing.py")
        layer = re.match(r"layers\.(\d+)\.attn\.", name)
        if layer and cfg.deltanet is not None and not cfg.deltanet.is_attention_layer(int(layer.group(1))):
            part = "deltanet"  # a hybrid's token mixer: Gated DeltaNet, not attention
        parts[part] = parts.get(part, 0) + param.numel()
    return parts


@pytest.mark.parametrize("name", specs.preset_names())
def test_every_preset_counts_as_built(name: str) -> None:
    cfg = specs.load_preset(name)
    parts = built_parts(cfg)
    assert specs.parameter_parts(cfg) == parts
    assert specs.parameter_count(cfg) == sum(parts.values()) == model.count_parameters(cfg)


def _small_encoder(*overrides: str) -> specs.ModelConfig:
    base = ["vocab_size=97", "d_model=64", "n_layers=2", "attention.n_heads=4", "mlp.hidden=96", "max_seq_len=32"]
    return specs.apply_overrides(specs.load_preset("bert-1.7b"), [*base, *overrides])


# Each option the count has a term for, switched on (or off) against a small preset.
VARIANTS = {
    "qkv-and-out-bias": ("llama-tiny", ["attention.bias=true"]),
    "qkv-bias-only": ("llama-tiny", ["attention.bias=true", "attention.out_bias=false"]),
    "out-bias-only": ("llama-tiny", ["attention.out_bias=true"]),
    "qk-norm-wide-heads": ("llama-tiny", ["attention.qk_norm=true", "attention.head_dim=24"]),
    "mqa": ("llama-tiny", ["attention.n_kv_heads=1"]),
    "gelu-bias": ("llama-tiny", ["mlp.kind=gelu", "mlp.bias=true", "mlp.hidden=100"]),
    "geglu-bias": ("llama-tiny", ["mlp.kind=geglu", "mlp.bias=true"]),
    "default-hidden": ("llama-tiny", ["mlp.hidden=null"]),
    "layernorm-bias": ("llama-tiny", ["norm=layernorm", "norm_bias=true"]),
    "layernorm-no-bias": ("llama-tiny", ["norm=layernorm"]),
    "sandwich-offset": ("llama-tiny", ["residual=sandwich", "norm_weight_offset=1.0"]),
    "post-no-final-norm": ("llama-tiny", ["residual=post", "final_norm=false"]),
    "tied": ("llama-tiny", ["tie_embeddings=true"]),
    "learned-positions": ("llama-tiny", ["positions=learned", "rope=null"]),
    "sinusoidal": ("llama-tiny", ["positions=sinusoidal", "rope=null"]),
    "decoder-ignores-encoder-fields": ("llama-tiny", ["type_vocab_size=2", "embedding_norm=true"]),
    "deltanet-hybrid": ("llama-tiny", ["n_layers=5", "deltanet={n_heads: 2, head_k_dim: 16, n_value_heads: 4, hybrid_ratio: 3}"]),
    "moe": ("llama-tiny", ["moe={n_experts: 4, top_k: 2, expert_hidden: 48}"]),
    "moe-shared-gated-sparse": ("llama-tiny", ["n_layers=5", "moe={n_experts: 8, top_k: 1, expert_hidden: 16,"
                                               " n_shared_experts: 2, shared_expert_hidden: 24, shared_expert_gate: true,"
                                               " every: 2, first_dense_layers: 1}"]),
    "gemma-like": ("llama-tiny", ["residual=sandwich", "attention.qk_norm=true", "attention.window=8",
                                  "attention.global_every=2", "mlp.kind=geglu", "embedding_scale=8.0"]),
}
ENCODER_VARIANTS = {
    "bert-mlm-tied": [],
    "mlm-untied": ["tie_embeddings=false"],
    "mlm-dense-without-bias": ["mlp.bias=false", "attention.bias=false"],
    "no-head": ["head=none"],
    "no-types-no-embedding-norm": ["type_vocab_size=0", "embedding_norm=false", "final_norm=true"],
    "rms-pre-norm-rope": ["norm=rmsnorm", "norm_bias=false", "residual=pre", "positions=rope", "rope={theta: 10000.0}"],
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_decoder_options_count_as_built(variant: str) -> None:
    preset, overrides = VARIANTS[variant]
    cfg = specs.apply_overrides(specs.load_preset(preset), overrides)
    assert specs.parameter_parts(cfg) == built_parts(cfg)


def test_a_hybrids_kv_cache_counts_its_attention_layers_only() -> None:
    preset, overrides = VARIANTS["deltanet-hybrid"]
    cfg = specs.apply_overrides(specs.load_preset(preset), overrides)
    per_token = 2 * cfg.attention.kv_heads * cfg.head_dim * 4  # float32, one attention layer (layer 3) of five
    assert specs.model_sizes(cfg).kv_cache_bytes_per_token == per_token
    sizes = specs.model_sizes(cfg)
    # DeltaNet layers 0-2 and 4: a 3-step convolution state over q, k, v (2*2*16 + 4*16 channels) and a (4, 16, 16)
    # float32 recurrent state each.
    assert sizes.recurrent_state_bytes_per_row == 4 * ((2 * 2 * 16 + 4 * 16) * 3 * 4 + 4 * 16 * 16 * 4)
    cache = model.build(cfg).new_cache(2, 8)
    # What the cache allocates: keys and values of 8 tokens, the fixed states, and one int64 length per row.
    assert cache.bytes() == 2 * (per_token * 8 + sizes.recurrent_state_bytes_per_row) + 2 * 8


def test_active_parameters_count_top_k_of_the_routed_experts() -> None:
    cfg = specs.load_preset("qwen3-mini")
    sizes, moe = specs.model_sizes(cfg), cfg.moe
    assert moe is not None
    routed = dict(sizes.parts)["experts"]
    assert sizes.active_parameters == sizes.parameters - routed + routed * moe.top_k // moe.n_experts
    dense = specs.model_sizes(specs.load_preset("llama-tiny"))
    assert dense.active_parameters == dense.parameters and dense.recurrent_state_bytes_per_row == 0


@pytest.mark.parametrize("variant", ENCODER_VARIANTS)
def test_encoder_options_count_as_built(variant: str) -> None:
    cfg = _small_encoder(*ENCODER_VARIANTS[variant])
    assert specs.parameter_parts(cfg) == built_parts(cfg)


# google/gemma-3-1b-pt's config.json as published (the keys a config of this transformers version reads).
GEMMA3_1B_CONFIG: dict[str, Any] = {
    "architectures": ["Gemma3ForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "attn_logit_softcapping": None,
    "final_logit_softcapping": None,
    "head_dim": 256,
    "hidden_activation": "gelu_pytorch_tanh",
    "hidden_size": 1152,
    "initializer_range": 0.02,
    "intermediate_size": 6912,
    "max_position_embeddings": 32768,
    "model_type": "gemma3_text",
    "num_attention_heads": 4,
    "num_hidden_layers": 26,
    "num_key_value_heads": 1,
    "query_pre_attn_scalar": 256,
    "rms_norm_eps": 1e-06,
    "rope_local_base_freq": 10000,
    "rope_scaling": None,
    "rope_theta": 1000000,
    "sliding_window": 512,
    "sliding_window_pattern": 6,
    "vocab_size": 262144,
}


def test_gemma3_1b_is_gemma_3_1b() -> None:
    """The preset is what importing the real checkpoint's config gives, and transformers' Gemma 3 of that
    config has exactly the parameters we count: about 1.0B (the seed's 1.29B is a model of its own)."""
    import transformers

    preset = specs.load_preset("gemma3-1b")
    imported = HF_FAMILIES["gemma3_text"].config_from_hf(GEMMA3_1B_CONFIG, name="gemma3-1b", dtype="bfloat16")
    assert imported == preset
    hf_keys = {k: v for k, v in GEMMA3_1B_CONFIG.items() if k != "architectures"}
    with torch.device("meta"):
        reference = transformers.Gemma3ForCausalLM(transformers.Gemma3TextConfig(**hf_keys))
    assert sum(p.numel() for p in reference.parameters()) == specs.parameter_count(preset) == 999_885_952


def test_bert_1_7b_counts_as_transformers_bert() -> None:
    """transformers' BertForMaskedLM of the preset's exported config has our count (1.68B)."""
    import transformers

    preset = specs.load_preset("bert-1.7b")
    hf_config = HF_FAMILIES["bert"].hf_config(preset, dtype="float32")
    assert hf_config["hidden_size"] == 2048 and hf_config["tie_word_embeddings"]
    with torch.device("meta"):
        reference = transformers.BertForMaskedLM(transformers.BertConfig(**hf_config))
    assert sum(p.numel() for p in reference.parameters()) == specs.parameter_count(preset) == 1_679_261_498
