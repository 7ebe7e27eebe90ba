"""DecoderLM: parameter counts from the config, tying, protocols, the TP plan, initialisation, input validation,
a GPT forward against an independent reference, dropout/drop-path, and bfloat16.

Llama-style parity with Hugging Face lives in ``test_hf_llama.py``; decode == forward in
``test_decode_equals_forward.py``.
"""

from __future__ import annotations

import fnmatch
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import model
import specs
from kernel import KernelUnavailable
from kernel.registry import clear_auto_choices


def _cfg(preset: str, *overrides: str) -> specs.ModelConfig:
    return specs.apply_overrides(specs.load_preset(preset), list(overrides))


def _build(cfg: specs.ModelConfig, seed: int = 0, **kwargs) -> nn.Module:
    torch.manual_seed(seed)
    return model.build(cfg, **kwargs).eval()


def _ids(cfg: specs.ModelConfig, batch: int, length: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, cfg.vocab_size, (batch, length), generator=torch.Generator().manual_seed(seed))


# -------------------------------------------------------------------------------------------- parameter count


def expected_parameters(cfg: specs.ModelConfig) -> int:
    """Written from the architecture, not from the modules: what each layer type holds."""
    c, hidden, att = cfg.d_model, cfg.mlp_hidden, cfg.attention
    q_width, kv_width = att.n_heads * cfg.head_dim, att.kv_heads * cfg.head_dim
    attention = c * q_width + 2 * c * kv_width + q_width * c
    attention += (q_width + 2 * kv_width + c) if att.bias else 0
    attention += 2 * cfg.head_dim if att.qk_norm else 0
    if cfg.mlp.kind == "swiglu":
        mlp = 3 * c * hidden + ((2 * hidden + c) if cfg.mlp.bias else 0)
    else:
        mlp = 2 * c * hidden + ((hidden + c) if cfg.mlp.bias else 0)
    norm = c * (2 if cfg.norm == "layernorm" and cfg.norm_bias else 1)
    layer = attention + mlp + 2 * norm
    embeddings = cfg.vocab_size * c
    learned = cfg.max_seq_len * c if cfg.positions == "learned" else 0
    head = 0 if cfg.tie_embeddings else cfg.vocab_size * c
    return embeddings + learned + cfg.n_layers * layer + (norm if cfg.final_norm else 0) + head


def test_llama_55m_parameter_count_on_meta() -> None:
    cfg = specs.load_preset("llama-55m")
    m = model.build(cfg, device="meta")
    tensors = [*m.parameters(), *m.buffers()]
    assert tensors and all(t.is_meta for t in tensors)  # nothing allocated
    assert model.count_parameters(cfg) == 55_321_088
    # 2 * 32000 * 512 (untied embeddings + head) + 8 * (655_360 attention + 2_162_688 SwiGLU + 1024 norms) + 512
    assert expected_parameters(cfg) == 55_321_088


def test_gpt_shakespeare_char_parameter_count() -> None:
    cfg = specs.load_preset("gpt-shakespeare-char")
    # 65 * 128 tied embeddings + 64 * 128 learned positions + 4 * (65_536 + 131_072 + 256) + 128 final norm
    assert model.count_parameters(cfg) == expected_parameters(cfg) == 804_096
    assert sum(p.numel() for p in _build(cfg).parameters()) == 804_096  # materialised: tied still counted once


def test_meta_build_has_the_config_dtype() -> None:
    """Memory planning on meta (``param.element_size()``) needs the dtype the real model will have."""
    m = model.build(_cfg("llama-tiny", "dtype=bfloat16"), device="meta")
    assert {p.dtype for p in m.parameters()} == {torch.bfloat16}


@pytest.mark.parametrize(
    "preset, overrides",
    [
        ("llama-tiny", ["attention.qk_norm=true", "attention.bias=true", "mlp.bias=true"]),
        ("llama-tiny", ["tie_embeddings=true", "final_norm=false", "attention.head_dim=8"]),
        ("gpt-shakespeare-char", ["norm_bias=true", "mlp.bias=true", "positions=sinusoidal"]),
        ("gpt-shakespeare-char", ["mlp.hidden=null", "tie_embeddings=false", "attention.n_kv_heads=2"]),
    ],
)
def test_parameter_count_matches_formula(preset: str, overrides: list[str]) -> None:
    cfg = _cfg(preset, *overrides)
    assert model.count_parameters(cfg) == expected_parameters(cfg)


# -------------------------------------------------------------------------------------------------- tying


def test_tied_weights_stay_tied() -> None:
    cfg = specs.load_preset("gpt-shakespeare-char")
    m = _build(cfg)
    assert m.lm_head.weight is m.tok_embeddings.weight
    m = m.to(torch.bfloat16)
    assert m.lm_head.weight is m.tok_embeddings.weight
    assert m.lm_head.weight.dtype == torch.bfloat16
    m = _build(cfg, dtype=torch.bfloat16)
    assert m.lm_head.weight is m.tok_embeddings.weight


def test_tie_survives_materialising_from_meta() -> None:
    """STYLE.md convention 3: build on meta, ``to_empty``, then re-tie and initialise."""
    m = model.build(specs.load_preset("gpt-shakespeare-char"), device="meta")
    assert m.lm_head.weight is m.tok_embeddings.weight
    m = m.to_empty(device="cpu")
    m.tie_weights()
    m.init_weights()
    assert m.lm_head.weight is m.tok_embeddings.weight


def test_untied_weights_are_separate() -> None:
    m = _build(specs.load_preset("llama-tiny"))
    assert m.lm_head.weight is not m.tok_embeddings.weight
    assert m.lm_head.weight.data_ptr() != m.tok_embeddings.weight.data_ptr()


# ------------------------------------------------------------------------------------- protocols and TP plan


@pytest.mark.parametrize("preset", ["llama-tiny", "gpt-shakespeare-char"])
def test_protocols(preset: str) -> None:
    m = _build(specs.load_preset(preset))
    assert isinstance(m, specs.CausalLM)
    assert isinstance(m, specs.ParallelizableModel)
    out = m(_ids(m.config, 1, 4), output="all")
    assert out.aux_losses == {}
    assert m.fsdp_units() == list(m.layers)


_EXPECTED_STYLE = {
    "wq": "colwise",
    "wk": "colwise",
    "wv": "colwise",
    "wo": "rowwise",
    "w1": "colwise",
    "w3": "colwise",
    "w2": "rowwise",
    "fc": "colwise",
    "proj": "rowwise",
}


def test_tp_plan_globs_match_and_cover_every_layer_linear() -> None:
    models = [model.build(specs.load_preset(p), device="meta") for p in ("llama-tiny", "gpt-shakespeare-char")]
    plan = models[0].tp_plan()
    assert plan == models[1].tp_plan()
    assert set(plan.values()) <= {"colwise", "rowwise"}
    linears = [name for m in models for name, module in m.named_modules() if isinstance(module, nn.Linear)]
    for glob in plan:  # no dead entry: every glob names at least one Linear of some family
        assert any(fnmatch.fnmatchcase(name, glob) for name in linears), glob
    for name in linears:
        if not name.startswith("layers."):
            continue  # lm_head is not sharded by the layer plan
        matches = [glob for glob in plan if fnmatch.fnmatchcase(name, glob)]
        assert len(matches) == 1, (name, matches)
        assert plan[matches[0]] == _EXPECTED_STYLE[name.rsplit(".", 1)[1]], name


# ---------------------------------------------------------------------------------------------------- init


@pytest.mark.parametrize(
    "preset, overrides",
    [
        (
            "llama-tiny",
            [
                "d_model=256",
                "n_layers=4",
                "mlp.hidden=512",
                "vocab_size=512",
                "attention.bias=true",
                "mlp.bias=true",
                "attention.qk_norm=true",
                "init_std=0.03",
            ],
        ),
        ("gpt-shakespeare-char", ["norm_bias=true", "attention.bias=true", "mlp.bias=true", "tie_embeddings=false"]),
    ],
    ids=["llama-mid", "gpt"],
)
def test_initialisation(preset: str, overrides: list[str]) -> None:
    """N(0, init_std) weights, init_std / sqrt(2L) for projections into the residual stream, zero biases,
    unit norm scales.

    Statistical tolerance: every checked matrix has >= 16k entries, so the sample std is within ~0.6% (one sd,
    1/sqrt(2N)) of the true std and the mean within std/128; we allow 5% and 5 sd of the mean.
    """
    cfg = _cfg(preset, *overrides)
    m = _build(cfg, seed=123)
    std, residual = cfg.init_std, cfg.init_std / math.sqrt(2 * cfg.n_layers)
    checked = 0
    for name, p in m.named_parameters():
        p = p.detach()
        if name.endswith("bias"):
            assert torch.equal(p, torch.zeros_like(p)), name
        elif p.dim() == 1:
            assert torch.equal(p, torch.ones_like(p)), name  # RMSNorm / LayerNorm / QK-norm scales
        else:
            want = residual if name.endswith((".wo.weight", ".w2.weight", ".proj.weight")) else std
            assert p.std().item() == pytest.approx(want, rel=0.05), name
            assert abs(p.mean().item()) < 5 * want / math.sqrt(p.numel()), name
            checked += 1
    assert checked == 2 + cfg.n_layers * (4 + (3 if cfg.mlp.kind == "swiglu" else 2)) + (
        1 if cfg.positions == "learned" else 0
    )


def test_init_is_seeded() -> None:
    cfg = specs.load_preset("llama-tiny")
    a, b = _build(cfg, seed=7), _build(cfg, seed=7)
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(pa, pb), name


# ----------------------------------------------------------------------------------------- input validation


def test_input_ids_of_the_wrong_rank() -> None:
    m = _build(specs.load_preset("llama-tiny"))
    with pytest.raises(specs.ShapeError, match="input_ids"):
        m(torch.zeros(5, dtype=torch.int64))
    with pytest.raises(specs.ShapeError, match="input_ids"):
        m(torch.zeros(1, 2, 5, dtype=torch.int64))
    with pytest.raises(specs.ShapeError, match="input_ids.*dtype"):
        m(torch.zeros(1, 5))


def test_positions_shape_mismatch() -> None:
    m = _build(specs.load_preset("llama-tiny"))
    ids = torch.zeros(2, 5, dtype=torch.int64)
    with pytest.raises(specs.ShapeError, match="positions"):
        m(ids, positions=torch.arange(6).expand(2, -1))
    with pytest.raises(specs.ShapeError, match="positions"):
        m(ids, positions=torch.arange(5).expand(3, -1))
    with pytest.raises(specs.ShapeError, match="positions"):
        m(ids, positions=torch.arange(5))


@torch.no_grad()
def test_explicit_positions_equal_the_default() -> None:
    m = _build(specs.load_preset("gpt-shakespeare-char"))
    ids = _ids(m.config, 2, 6)
    assert torch.equal(m(ids, positions=torch.arange(6).expand(2, -1)), m(ids))


@torch.no_grad()
def test_learned_positions_beyond_the_table() -> None:
    cfg = specs.load_preset("gpt-shakespeare-char")  # max_seq_len 64
    m = _build(cfg)
    m(_ids(cfg, 1, 64))  # exactly the table: fine
    with pytest.raises(specs.InputError, match=r"input of 65 tokens reaches position 64, beyond max_seq_len 64"):
        m(_ids(cfg, 1, 65))
    with pytest.raises(specs.InputError, match=r"max_len 80 exceeds max_seq_len 64"):
        m.new_cache(1, 80)
    cache = m.new_cache(1, 64)
    m(_ids(cfg, 1, 60), cache=cache)
    with pytest.raises(ValueError, match=r"row 0 holds 60 tokens and 5 more exceed max_len 64"):
        m(_ids(cfg, 1, 5), cache=cache)


@torch.no_grad()
def test_explicit_learned_positions_beyond_the_table_raise_value_error() -> None:
    cfg = specs.load_preset("gpt-shakespeare-char")
    m = _build(cfg)
    with pytest.raises(specs.InputError, match=r"positions range over 62..65, outside 0..63"):
        m(_ids(cfg, 1, 4), positions=torch.tensor([[62, 63, 64, 65]]))


def test_unknown_attention_kernel_is_named_when_the_config_is_validated() -> None:
    with pytest.raises(specs.ConfigError, match="attention.kernel: unknown attention kernel 'no_such_kernel'"):
        _cfg("llama-tiny", "attention.kernel=no_such_kernel")


def test_named_kernel_that_cannot_serve_says_why() -> None:
    with pytest.raises(KernelUnavailable, match=r"'sdpa' lacks softcap.*kernels that have it: manual"):
        _build(_cfg("llama-tiny", "attention.kernel=sdpa", "attention.softcap=20"))


# ------------------------------------------------------------------------------- GPT against a reference


def reference_gpt(m: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """Pre-norm GPT written from the definitions (nanoGPT's math), reading weights from the state dict."""
    cfg, sd = m.config, m.state_dict()
    b, t = ids.shape
    c, h = cfg.d_model, cfg.attention.n_heads
    d = c // h

    def ln(x, prefix):
        return F.layer_norm(x, (c,), sd[prefix + ".weight"], sd.get(prefix + ".bias"), cfg.norm_eps)

    def lin(x, prefix):
        return F.linear(x, sd[prefix + ".weight"], sd.get(prefix + ".bias"))

    x = sd["tok_embeddings.weight"][ids] + sd["positions.embedding.weight"][:t]
    causal = torch.ones(t, t, dtype=torch.bool).tril()
    for i in range(cfg.n_layers):
        p = f"layers.{i}"
        a = ln(x, f"{p}.attn_norm")
        q, k, v = (lin(a, f"{p}.attn.{w}").view(b, t, h, d).transpose(1, 2) for w in ("wq", "wk", "wv"))
        att = (q @ k.transpose(-2, -1) / math.sqrt(d)).masked_fill(~causal, float("-inf")).softmax(dim=-1)
        x = x + lin((att @ v).transpose(1, 2).reshape(b, t, c), f"{p}.attn.wo")
        x = x + lin(F.gelu(lin(ln(x, f"{p}.mlp_norm"), f"{p}.mlp.fc")), f"{p}.mlp.proj")
    return ln(x, "norm") @ sd["tok_embeddings.weight"].T  # tied head


@pytest.mark.parametrize(
    "overrides",
    [[], ["norm_bias=true", "attention.bias=true", "mlp.bias=true"]],
    ids=["nanogpt-no-bias", "with-biases"],
)
@torch.no_grad()
def test_gpt_forward_equals_reference(overrides: list[str]) -> None:
    """Tolerance: float32 on logits up to ~4 (ulp ~5e-7); the reference reorders a few ops (-inf masking, one
    matmul for all heads), each a few ulps, accumulated over 4 layers (observed ~2.5e-6). ``atol=1e-5``."""
    m = _build(_cfg("gpt-shakespeare-char", "init_std=0.1", *overrides))
    gen = torch.Generator().manual_seed(1)
    for name, p in m.named_parameters():  # non-trivial norm scales and biases
        if name.endswith("bias"):
            p.copy_(0.1 * torch.randn(p.shape, generator=gen))
        elif p.dim() == 1:
            p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
    ids = _ids(m.config, 2, 20)
    logits = m(ids)
    assert logits.shape == (2, 20, 65)
    torch.testing.assert_close(logits, reference_gpt(m, ids), atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------------ dropout / drop-path


@pytest.mark.parametrize("knob", ["dropout=0.2", "attention.dropout=0.2", "drop_path=0.5"])
def test_dropout_is_random_in_training_and_off_in_eval(knob: str) -> None:
    m = _build(_cfg("gpt-shakespeare-char", knob))
    ids = _ids(m.config, 4, 16)
    m.train()
    assert not torch.equal(m(ids), m(ids))
    m.eval()
    with torch.no_grad():
        assert torch.equal(m(ids), m(ids))
    plain = _build(specs.load_preset("gpt-shakespeare-char"))  # same seed, same weights, no dropout
    with torch.no_grad():
        torch.testing.assert_close(m(ids), plain(ids), atol=0, rtol=0)


def test_train_forward_is_reproducible_under_a_seed() -> None:
    """Same seed, same weights, same input: the same train-mode output, whether or not "auto" has already
    chosen a kernel for this shape."""
    clear_auto_choices()  # the first call below must be the one that selects the kernel
    m = _build(_cfg("gpt-shakespeare-char", "attention.dropout=0.1")).train()
    ids = _ids(m.config, 2, 16)
    torch.manual_seed(5)
    first = m(ids)
    torch.manual_seed(5)
    assert torch.equal(m(ids), first)


# ---------------------------------------------------------------------------------------------- bfloat16


@pytest.mark.parametrize("preset", ["llama-tiny", "gpt-shakespeare-char"])
@torch.no_grad()
def test_bfloat16_model_is_close_to_float32(preset: str) -> None:
    """The bf16 model and an fp32 model holding the same (bf16-representable) weights.

    Tolerance: bf16 keeps 8 significant bits (relative rounding 2^-9 ~ 2e-3 per op). Logits here reach ~2.5,
    where one bf16 ulp is 2^-6 ~ 0.016, so rounding the output alone costs up to ~0.008; with a few more
    rounding steps over 2-4 layers the observed worst case is ~0.02 (mean ~0.003). We allow max 0.05 and
    mean 0.01; feeding wrong positions, for comparison, moves these logits by 0.1-2.
    """
    cfg = _cfg(preset, "init_std=0.05")
    m16 = _build(cfg, dtype=torch.bfloat16)
    m32 = model.build(cfg, init=False)
    m32.load_state_dict({k: v.float() for k, v in m16.state_dict().items()})
    m32.eval()
    assert all(p.dtype == torch.bfloat16 for p in m16.parameters())
    ids = _ids(cfg, 2, 24)
    out16, out32 = m16(ids), m32(ids)
    assert out16.dtype == torch.bfloat16
    assert torch.isfinite(out16).all()
    err = (out16.float() - out32).abs()
    assert err.max() < 0.05
    assert err.mean() < 0.01
    cache = m16.new_cache(2, 24)
    assert cache.bytes() == 2 * cfg.n_layers * 2 * cfg.attention.kv_heads * 24 * cfg.head_dim * 2 + 2 * 8  # bf16
    stepped = torch.cat([m16(ids[:, :20], cache=cache), m16(ids[:, 20:], cache=cache)], dim=1)
    assert (stepped.float() - out32).abs().max() < 0.05
