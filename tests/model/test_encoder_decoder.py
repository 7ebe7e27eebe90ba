"""EncoderDecoderLM in its two styles, BART (post-norm, LayerNorm, learned positions, GELU, MHA) and Llama
(pre-norm, RMSNorm, RoPE, SwiGLU, GQA): cached decoding equals the full forward, padding of the source changes
nothing for the real tokens, the cache's memory follows beam reordering; DropPath, activation checkpointing,
bf16 autocast and weight tying; input errors; the llama3-2b preset on the meta device. Parity with
transformers: test_hf_bart.py."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
import torch.nn.functional as F

import model
import specs
import train.wrappers as wrappers
from attn.kv_cache import StaticKVCache
from attn.seq2seq_cache import Seq2SeqKVCache
from model.encoder_decoder import EncoderDecoderLM
from model.hf_bart import BartFamily
from specs.config_io import ConfigError, from_dict
from specs.errors import InputError, ShapeError
from specs.model_config import ModelConfig
from tests.model.test_preset_sizes import built_parts

TOL = 1e-5  # float32; cached and full forwards run the same arithmetic on differently shaped matmuls
VOCAB = 61
BART = dict(vocab_size=VOCAB, d_model=32, encoder_layers=2, decoder_layers=3, encoder_attention_heads=4,
            decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=32,
            dropout=0.0, scale_embedding=True)
LLAMA = dict(kind="model", version=4, name="llama-encdec-tiny", architecture="encoder_decoder", vocab_size=VOCAB,
             d_model=32, n_layers=3, encoder_layers=2, max_seq_len=32, attention={"n_heads": 4, "n_kv_heads": 2},
             mlp={"kind": "swiglu", "hidden": 48}, positions="rope", rope={"theta": 10000.0}, norm="rmsnorm",
             tie_embeddings=True)
STYLES = ["bart", "llama"]
LENGTHS = [9, 5, 7]  # source tokens per row, right-padded to 9


def _config(style: str, **changes) -> ModelConfig:
    if style == "bart":
        cfg = BartFamily().config_from_hf(BART, name="bart-tiny", dtype="float32")
    else:
        cfg = from_dict(LLAMA, kind="model")
    return dataclasses.replace(cfg, **changes)


def _build(cfg: ModelConfig, seed: int = 0) -> EncoderDecoderLM:
    torch.manual_seed(seed)
    m = model.build(cfg)
    assert isinstance(m, EncoderDecoderLM)
    with torch.no_grad():  # norms, biases and the logits bias off their identity/zero start
        gen = torch.Generator().manual_seed(seed + 1)
        for t in [*m.parameters(), *m.buffers()]:
            if t.dim() == 1 or t.shape[0] == 1:
                t.add_(torch.randn(t.shape, generator=gen) * 0.1)
    return m.eval()


def _batch(seed: int = 0, target: int = 6) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Source ids, their padding mask (True = padding) and target ids."""
    gen = torch.Generator().manual_seed(seed)
    src = torch.randint(0, VOCAB, (len(LENGTHS), max(LENGTHS)), generator=gen)
    pad = torch.arange(max(LENGTHS))[None, :] >= torch.tensor(LENGTHS)[:, None]
    return src, pad, torch.randint(0, VOCAB, (len(LENGTHS), target), generator=gen)


def _loss(m: EncoderDecoderLM, src: torch.Tensor, pad: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
    logits = m(tgt[:, :-1], input_ids=src, memory_padding_mask=pad)
    return F.cross_entropy(logits.flatten(0, 1).float(), tgt[:, 1:].flatten())


def _grads_everywhere(m: torch.nn.Module) -> bool:
    """Every parameter got a finite gradient (zero where DropPath dropped a branch for the whole batch)."""
    return all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())


# ------------------------------------------------------------------------------------------------- decoding


@pytest.mark.parametrize("fixed_shapes", [False, True])
@pytest.mark.parametrize("style", STYLES)
def test_cached_decoding_equals_full_forward(style: str, fixed_shapes: bool) -> None:
    """The encoder runs once; a 3-token prompt, then one token per step; logits equal the full forward's."""
    m = _build(_config(style))
    src, pad, tgt = _batch()
    with torch.no_grad():
        full = m(tgt, input_ids=src, memory_padding_mask=pad)
        memory = m.encode(src, key_padding_mask=pad)
        cache = m.new_cache(len(LENGTHS), 16, fixed_shapes=fixed_shapes)
        steps = [m(tgt[:, :3], memory=memory, memory_padding_mask=pad, cache=cache)]
        steps += [m.decode(tgt[:, t : t + 1], None, memory_padding_mask=pad, cache=cache) for t in range(3, tgt.shape[1])]
    diff = (torch.cat(steps, dim=1) - full).abs().max().item()
    print(f"{style} fixed_shapes={fixed_shapes}: cached vs full max abs diff {diff:.2e}")
    assert diff <= TOL
    assert isinstance(cache, specs.KVCache) and isinstance(cache, specs.MemoryKV)


@pytest.mark.parametrize("style", STYLES)
def test_source_padding_changes_nothing(style: str) -> None:
    """Each row of a padded batch gets the logits it gets alone and unpadded; without the mask it would not."""
    m = _build(_config(style))
    src, pad, tgt = _batch()
    with torch.no_grad():
        batched = m(tgt, input_ids=src, memory_padding_mask=pad)
        unmasked = m(tgt, input_ids=src)
        for row, n in enumerate(LENGTHS):
            alone = m(tgt[row : row + 1], input_ids=src[row : row + 1, :n])
            assert (batched[row] - alone[0]).abs().max().item() <= TOL
    assert (unmasked[1] - batched[1]).abs().max().item() > 1e-3


def test_reorder_moves_the_memory_with_the_rows() -> None:
    """Beam search: after reorder, each row decodes as the row it copied, memory included."""
    m = _build(_config("llama"))
    src, pad, tgt = _batch()
    order = torch.tensor([2, 2, 0])
    with torch.no_grad():
        cache = m.new_cache(3, 16)
        m(tgt[:, :2], input_ids=src, memory_padding_mask=pad, cache=cache)
        cache.reorder(order)
        step = m(tgt[order, 2:3], memory_padding_mask=pad[order], cache=cache)
        full = m(tgt[order, :3], input_ids=src[order], memory_padding_mask=pad[order])
    assert (step[:, 0] - full[:, 2]).abs().max().item() <= TOL


def test_cache_holds_memory_and_reset_forgets_it() -> None:
    m = _build(_config("bart"))
    src, pad, tgt = _batch()
    cache = m.new_cache(3, 8)
    empty = cache.bytes()
    with torch.no_grad():
        m(tgt[:, :2], input_ids=src, memory_padding_mask=pad, cache=cache)
    k, v = cache.memory(2)
    assert k.shape == v.shape == (3, 4, max(LENGTHS), 8)
    assert cache.bytes() == empty + 3 * 2 * k.numel() * k.element_size()
    cache.reset([0])
    assert cache.memory(0) is not None  # a row reset keeps the memory (all rows share it)
    cache.reset()
    assert cache.memory(0) is None and cache.seq_lens.tolist() == [0, 0, 0]
    with pytest.raises(IndexError, match="layer 3 is out of range for a cache of 3 layers"):
        cache.memory(3)


def test_compiles_to_one_graph() -> None:
    """The training forward (source ids in, logits out) and a fixed-shape cached decode step each compile to one
    graph (fullgraph=True: no breaks), with the eager results. The 'eager' backend keeps the test fast: graph
    breaks are dynamo's, whatever the backend."""
    m = _build(_config("llama"))
    src, pad, tgt = _batch()
    train = torch.compile(lambda t, s, p: m(t, input_ids=s, memory_padding_mask=p), backend="eager", fullgraph=True)
    # Within TOL, not equal: under a trace "auto" takes the preferred kernel, eager the measured fastest one.
    assert (train(tgt, src, pad) - m(tgt, input_ids=src, memory_padding_mask=pad)).abs().max().item() <= TOL
    with torch.no_grad():
        full = m(tgt, input_ids=src, memory_padding_mask=pad)
        cache = m.new_cache(3, 8, fixed_shapes=True)
        steps = [m(tgt[:, :1], input_ids=src, memory_padding_mask=pad, cache=cache)]
        step = torch.compile(lambda t: m(t, memory_padding_mask=pad, cache=cache), backend="eager", fullgraph=True)
        steps += [step(tgt[:, t : t + 1]) for t in range(1, tgt.shape[1])]
    assert (torch.cat(steps, dim=1) - full).abs().max().item() <= TOL


# -------------------------------------------------------------------------------------------- cross-cutting


@pytest.mark.parametrize("style", STYLES)
def test_drop_path(style: str) -> None:
    """Training drops whole branches per sample (reproducibly under a seed) in both stacks, the rate rising to
    drop_path at the last layer of each; eval is exactly the model without DropPath."""
    cfg = _config(style, drop_path=0.5)
    m, plain = _build(cfg), _build(_config(style))
    plain.load_state_dict(m.state_dict())
    rates = [[blk.branch_drop[1].p for blk in side.layers] for side in (m.encoder, m.decoder)]
    assert rates == [[0.0, 0.5], [0.0, 0.25, 0.5]]
    src, pad, tgt = _batch()
    with torch.no_grad():
        evaluated = m(tgt, input_ids=src, memory_padding_mask=pad)
        assert torch.equal(evaluated, plain(tgt, input_ids=src, memory_padding_mask=pad))
        m.train()
        torch.manual_seed(3)
        trained = m(tgt, input_ids=src, memory_padding_mask=pad)
        torch.manual_seed(3)
        assert torch.equal(m(tgt, input_ids=src, memory_padding_mask=pad), trained)
    assert (trained - evaluated).abs().max() > 1e-3
    _loss(m, src, pad, tgt).backward()
    assert _grads_everywhere(m)


@pytest.mark.parametrize("style", STYLES)
def test_activation_checkpointing(style: str) -> None:
    """Every encoder and decoder block checkpointed (train.wrappers): same loss and gradients, DropPath draws
    included. Tolerance 1e-6 as in tests/train/test_wrappers.py: the recomputation replays the same arithmetic."""
    plain = _build(_config(style, drop_path=0.3)).train()
    assert len(plain.fsdp_units()) == 5
    wrapped = wrappers.apply_activation_checkpointing(copy.deepcopy(plain)).train()
    src, pad, tgt = _batch()
    torch.manual_seed(7)
    loss_plain = _loss(plain, src, pad, tgt)
    torch.manual_seed(7)
    loss_wrapped = _loss(wrapped, src, pad, tgt)
    torch.testing.assert_close(loss_wrapped, loss_plain, atol=1e-6, rtol=0)
    loss_plain.backward()
    loss_wrapped.backward()
    grads = dict(wrapped.named_parameters())
    for name, p in plain.named_parameters():
        torch.testing.assert_close(grads[name].grad, p.grad, atol=1e-6, rtol=0, msg=name)


@pytest.mark.parametrize("style", STYLES)
def test_bf16_autocast(style: str) -> None:
    """Under CPU bfloat16 autocast the logits stay close to float32's and the backward is finite. The error is
    bf16 rounding of the matmuls (logits of magnitude ~0.5, a bf16 ulp ~0.002-0.004 there): observed max ~5e-3
    and mean ~1e-3, so we allow 0.03 and 0.005."""
    m = _build(_config(style, init_std=0.05))
    src, pad, tgt = _batch()
    with torch.no_grad():
        reference = m(tgt, input_ids=src, memory_padding_mask=pad)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = m(tgt, input_ids=src, memory_padding_mask=pad)
        loss = _loss(m, src, pad, tgt)
    # BART's float32 logits bias promotes the sum, as transformers' does; the others stay in bfloat16.
    assert logits.dtype == (torch.float32 if m.config.logits_bias else torch.bfloat16)
    err = (logits.float() - reference).abs()
    print(f"{style}: bf16 autocast vs float32 logits: max {err.max():.3e}, mean {err.mean():.3e}")
    assert err.max() < 0.03 and err.mean() < 0.005
    loss.backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all() for p in m.parameters())


@pytest.mark.parametrize("style", STYLES)
def test_weight_tying(style: str) -> None:
    """One token embedding for encoder, decoder and head: one parameter whose gradient sums all three uses,
    shared through an optimizer step and counted once."""
    tied = _build(_config(style)).train()
    assert tied.lm_head.weight is tied.tok_embeddings.weight
    untied = _build(_config(style, tie_embeddings=False)).train()
    untied.load_state_dict({**tied.state_dict(), "lm_head.weight": tied.tok_embeddings.weight.detach().clone()})
    src, pad, tgt = _batch()
    _loss(tied, src, pad, tgt).backward()
    _loss(untied, src, pad, tgt).backward()
    summed = untied.tok_embeddings.weight.grad + untied.lm_head.weight.grad
    torch.testing.assert_close(tied.tok_embeddings.weight.grad, summed, atol=1e-6, rtol=0)
    torch.optim.SGD(tied.parameters(), lr=0.1).step()
    assert tied.lm_head.weight is tied.tok_embeddings.weight
    assert model.count_parameters(untied.config) - model.count_parameters(tied.config) == VOCAB * 32


def test_protocols_and_output_kinds() -> None:
    m = _build(_config("llama"))
    assert isinstance(m, specs.Seq2SeqLM) and isinstance(m, specs.ParallelizableModel)
    src, pad, tgt = _batch()
    with torch.no_grad():
        out = m(tgt, input_ids=src, memory_padding_mask=pad, output="all")
        logits = m(tgt, input_ids=src, memory_padding_mask=pad)
    assert torch.equal(out.logits, logits) and torch.equal(m.output_head()(out.hidden), logits)
    assert set(m.tp_plan()) >= {"encoder.layers.*.attn.wq", "decoder.layers.*.cross_attn.wo"}


def test_checkpoint_round_trip(tmp_path) -> None:
    m = _build(_config("bart"))
    model.save_checkpoint(m, tmp_path / "ckpt")
    loaded = model.load_checkpoint(tmp_path / "ckpt")
    src, pad, tgt = _batch()
    with torch.no_grad():
        assert torch.equal(loaded(tgt, input_ids=src, memory_padding_mask=pad), m(tgt, input_ids=src, memory_padding_mask=pad))


# ----------------------------------------------------------------------------------------------- errors


def test_bad_inputs_are_refused_clearly() -> None:
    m = _build(_config("llama"))
    src, pad, tgt = _batch()
    memory = m.encode(src, key_padding_mask=pad)
    with pytest.raises(ShapeError, match="memory holds 3 rows but decoder_input_ids has 2"):
        m(tgt[:2], memory=memory)
    with pytest.raises(ShapeError, match="memory"):
        m(tgt, memory=memory[..., :16])
    with pytest.raises(InputError, match="no source: pass input_ids"):
        m(tgt)
    with pytest.raises(InputError, match="not both"):
        m(tgt, input_ids=src, memory=memory)
    with pytest.raises(InputError, match="memory_padding_mask must be bool with True = padding"):
        m(tgt, memory=memory, memory_padding_mask=(~pad).long())
    with pytest.raises(ShapeError, match="memory_padding_mask"):
        m(tgt, memory=memory, memory_padding_mask=pad[:, :4])
    with pytest.raises(InputError, match="beyond max_seq_len 32"):
        m.encode(torch.zeros(1, 33, dtype=torch.long))
    with pytest.raises(InputError, match=r"decoder_input_ids: token id \d+ at \[0, 0\] is outside the vocabulary"):
        m(tgt + VOCAB, memory=memory)
    with pytest.raises(ShapeError, match="decoder_input_ids: expected 2 dims"):
        m(tgt[0], memory=memory)


def test_cache_misuse_is_refused() -> None:
    m = _build(_config("llama"))
    src, pad, tgt = _batch()
    with torch.no_grad():
        cache = m.new_cache(3, 4)
        m(tgt[:, :4], input_ids=src, memory_padding_mask=pad, cache=cache)
        with pytest.raises(ValueError, match="KV cache is full: row 0 holds 4 tokens"):
            m(tgt[:, 4:5], memory_padding_mask=pad, cache=cache)
        other = m.new_cache(3, 4)
        m(tgt[:, :1], input_ids=src, memory_padding_mask=pad, cache=other)
        with pytest.raises(InputError, match="memory has 4 source tokens but the cache holds a memory of 9"):
            m(tgt[:, 1:2], memory=torch.zeros(3, 4, 32), cache=other)
        plain = StaticKVCache(n_layers=3, batch=3, n_kv_heads=2, head_dim=8, max_len=4)
        with pytest.raises(InputError, match="StaticKVCache has no room for the encoder memory"):
            m(tgt[:, :1], input_ids=src, cache=plain)
        with pytest.raises(ShapeError, match="the cache holds 2 rows but input_ids has 3"):
            m(tgt[:, :1], input_ids=src, cache=m.new_cache(2, 4))
    with pytest.raises(InputError, match="exceeds max_seq_len 32"):
        m.new_cache(1, 33)
    assert isinstance(cache, Seq2SeqKVCache)


# ----------------------------------------------------------------------------------------------- configs


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"architecture": "decoder"}, "encoder_layers: is an encoder_decoder setting"),
        ({"head": "mlm"}, "head: an encoder_decoder takes head 'lm'"),
        ({"residual": "sandwich"}, "residual: is 'sandwich'; an encoder_decoder is 'pre' or 'post' norm"),
        ({"encoder_layers": 0}, "encoder_layers: must be >= 1"),
        ({"position_offset": 2}, "position_offset: applies to learned positions"),
    ],
)
def test_config_rules(changes: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        from_dict({**LLAMA, **changes}, kind="model")


def _expected_parameters(cfg: ModelConfig) -> int:
    """Parameters of an encoder-decoder from the config fields alone (the formula the preset sizing uses).
    The logits bias is a buffer, not a parameter."""
    c, v, hd, f = cfg.d_model, cfg.vocab_size, cfg.head_dim, cfg.mlp_hidden
    hq, hkv, att = cfg.attention.n_heads, cfg.attention.kv_heads, cfg.attention
    attn = 2 * c * hq * hd + 2 * c * hkv * hd
    attn += (hq * hd + 2 * hkv * hd if att.bias else 0) + (c if att.output_bias else 0) + (2 * hd if att.qk_norm else 0)
    gated = cfg.mlp.kind in ("swiglu", "geglu")
    mlp = (3 if gated else 2) * c * f + ((2 * f if gated else f) + c if cfg.mlp.bias else 0)
    norm = 2 * c if cfg.norm == "layernorm" and cfg.norm_bias else c
    encoder_layer = attn + mlp + 2 * norm
    decoder_layer = 2 * attn + mlp + 3 * norm  # self-attention, cross-attention, MLP, and a norm with each
    per_side = (cfg.max_seq_len + cfg.position_offset) * c if cfg.positions == "learned" else 0
    per_side += (norm if cfg.embedding_norm else 0) + (norm if cfg.final_norm else 0)
    head = 0 if cfg.tie_embeddings else v * c
    return v * c + 2 * per_side + cfg.n_encoder_layers * encoder_layer + cfg.n_layers * decoder_layer + head


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("changes", [{}, {"tie_embeddings": False, "encoder_layers": 4}, {"final_norm": False}])
def test_sizing_counts_as_built(style: str, changes: dict) -> None:
    """specs.sizing's parts (what config show prints) equal the built model's, part by part."""
    cfg = _config(style, **changes)
    parts = built_parts(cfg)
    assert specs.parameter_parts(cfg) == parts and parts["cross_attention"] > 0
    assert specs.parameter_count(cfg) == model.count_parameters(cfg) == _expected_parameters(cfg)


def test_llama3_2b_preset_builds_on_meta() -> None:
    cfg = specs.load_preset("llama3-2b")
    assert (cfg.architecture, cfg.n_encoder_layers, cfg.n_layers, cfg.d_model) == ("encoder_decoder", 13, 13, 2048)
    assert (cfg.attention.n_heads, cfg.attention.kv_heads, cfg.mlp.kind, cfg.norm) == (32, 8, "swiglu", "rmsnorm")
    m = model.build(cfg, device="meta")
    assert all(p.is_meta for p in m.parameters()) and next(m.parameters()).dtype == torch.bfloat16
    assert model.count_parameters(cfg) == _expected_parameters(cfg) == 1_980_372_992
    llama = _config("llama")
    qk_norm = dataclasses.replace(llama, attention=dataclasses.replace(llama.attention, qk_norm=True))
    for tiny in (llama, qk_norm, _config("bart"), _config("llama", tie_embeddings=False)):
        assert model.count_parameters(tiny) == _expected_parameters(tiny)
