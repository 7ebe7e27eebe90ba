"""Hybrid decoders (Gated DeltaNet layers with a softmax-attention layer every ``hybrid_ratio + 1``): the layout,
decoding through the mixed cache equals the full forward (one row and several, a padded batch, fixed shapes,
``serve.generate``), one compiled graph for training and for a decode step, and DropPath, activation checkpointing, bf16 autocast and weight tying.

Tolerance: float32, ``ATOL = 1e-5`` for decoding vs the full forward: the same layers run on other splits of the
sequence (chunks vs single tokens), logits are O(1) and agree to ~1e-6.
"""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
import torch.nn.functional as F

import model
import specs
import train.wrappers as wrappers
from attn import GatedDeltaNet, HybridCache, SelfAttention
from specs.cache import KVCache, RecurrentState
from tensor.masks import padding_mask

ATOL = 1e-5  # float32; see the module docstring

HYBRID = specs.ModelConfig(
    name="hybrid-tiny",
    vocab_size=64,
    d_model=32,
    n_layers=5,  # DeltaNet 0, 1, 2, attention 3, DeltaNet 4
    max_seq_len=48,
    attention=specs.AttentionConfig(n_heads=4, n_kv_heads=2),
    mlp=specs.MLPConfig(kind="swiglu", hidden=64),
    rope=specs.RoPEConfig(),
    deltanet=specs.DeltaNetConfig(n_heads=2, n_value_heads=4, head_k_dim=8, head_v_dim=8, chunk_size=8, hybrid_ratio=3),
)


def _build(cfg: specs.ModelConfig = HYBRID, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    m = model.build(cfg)
    with torch.no_grad():  # norm scales and gate biases off their start, so each is exercised
        gen = torch.Generator().manual_seed(seed + 1)
        for p in m.parameters():
            if p.dim() == 1:
                p.add_(torch.randn(p.shape, generator=gen) * 0.1)
    return m.eval()


def _ids(batch: int, seq: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, HYBRID.vocab_size, (batch, seq), generator=torch.Generator().manual_seed(seed))


def _loss(m: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(m(ids[:, :-1]).flatten(0, 1).float(), ids[:, 1:].flatten())


def test_layout_and_parameter_count() -> None:
    m = _build()
    kinds = [type(layer.attn) for layer in m.layers]
    assert kinds == [GatedDeltaNet, GatedDeltaNet, GatedDeltaNet, SelfAttention, GatedDeltaNet]
    dense = dataclasses.replace(HYBRID, deltanet=None)
    attention_layer = (model.count_parameters(dense) - model.count_parameters(dataclasses.replace(dense, n_layers=4)))
    mixer = sum(p.numel() for p in m.layers[3].attn.parameters())
    per_deltanet_layer = attention_layer - mixer + HYBRID.deltanet.layer_parameters(HYBRID.d_model)
    assert model.count_parameters(HYBRID) == model.count_parameters(dense) + 4 * (per_deltanet_layer - attention_layer)
    cache = m.new_cache(2, 16)
    assert isinstance(cache, KVCache) and isinstance(cache, RecurrentState) and isinstance(cache, HybridCache)


@torch.no_grad()
@pytest.mark.parametrize(("batch", "fixed_shapes"), [(1, False), (3, False), (3, True)])
def test_decoding_through_the_mixed_cache_equals_the_full_forward(batch: int, fixed_shapes: bool) -> None:
    m = _build()
    ids = _ids(batch, 21)
    full = m(ids)
    cache = m.new_cache(batch, 32, fixed_shapes=fixed_shapes)
    pieces = [(0, 9), *((t, t + 1) for t in range(9, 14)), (14, 18), *((t, t + 1) for t in range(18, 21))]
    steps = [m(ids[:, lo:hi], cache=cache) for lo, hi in pieces]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=ATOL, rtol=0)
    assert cache.seq_lens.tolist() == [21] * batch


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"deltanet": {"n_value_heads": 3}}, "deltanet.n_value_heads: must be a multiple of n_heads (2)"),
        ({"deltanet": {"chunk_size": 0}}, "deltanet.chunk_size: must be >= 1"),
        ({"n_layers": 3}, "deltanet.hybrid_ratio: (3) leaves no softmax-attention layer in 3 layers"),
        ({"architecture": "encoder", "head": "none"}, "deltanet: Gated DeltaNet layers are causal"),
    ],
)
def test_config_problems_name_the_field(change: dict, message: str) -> None:
    data = specs.to_dict(HYBRID)
    for key, value in change.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) else value
    with pytest.raises(specs.ConfigError) as err:
        specs.from_dict(data)
    assert message in str(err.value)
    assert specs.from_dict(specs.to_dict(HYBRID)) == HYBRID


def test_build_initialises_the_layers_own_parameters() -> None:
    """``build`` materialises from the meta device, so ``init_weights`` must set what no generic rule covers."""
    layer = model.build(HYBRID).layers[0].attn
    assert isinstance(layer, GatedDeltaNet)
    assert torch.equal(layer.dt_bias, torch.ones(4)) and torch.equal(layer.norm.weight, torch.ones(8))
    assert bool(((layer.a_log.exp() >= 0.01 - 1e-6) & (layer.a_log.exp() <= 16 + 1e-4)).all())
    assert 0 < layer.conv_weight.abs().max() <= HYBRID.deltanet.conv_kernel**-0.5


@pytest.mark.slow  # ~6 s: a dynamo trace of the whole model
def test_training_forward_compiles_as_one_graph(compile_counter) -> None:
    m = _build().train()
    compiled = torch.compile(m, backend=compile_counter, fullgraph=True)
    compiled(_ids(2, 16)).logsumexp(-1).mean().backward()
    assert compile_counter.compiles == 1
    assert all(p.grad is not None for p in m.parameters())


@pytest.mark.slow  # ~6 s: a dynamo trace of the whole model
@torch.no_grad()
def test_fixed_shape_decode_step_compiles_once(compile_counter) -> None:
    """One decode step through the mixed cache is one graph (no breaks), reused at every length."""
    m = _build()
    ids = _ids(2, 16)
    cache = m.new_cache(2, 24, fixed_shapes=True)
    m(ids[:, :8], cache=cache)
    step = torch.compile(lambda token: m(token, cache=cache), backend=compile_counter, fullgraph=True)
    stepped = torch.cat([step(ids[:, i : i + 1]) for i in range(8, 16)], dim=1)
    assert compile_counter.compiles == 1
    torch.testing.assert_close(stepped, m(ids)[:, 8:], atol=ATOL, rtol=0)


@torch.no_grad()
def test_left_padded_prompts_decode_as_each_row_alone() -> None:
    """Prompts of 7, 3 and 5 tokens left-padded to 7 (a key-padding mask over every key, as ``serve`` builds
    it; positions count real tokens), then decoded together: each row's logits equal its own forward."""
    m = _build(seed=1)
    lengths, n_new = [7, 3, 5], 4
    width = max(lengths)
    rows = [_ids(1, n + n_new, seed=10 + i)[0] for i, n in enumerate(lengths)]
    ids = torch.zeros(3, width + n_new, dtype=torch.int64)
    pad = torch.zeros(3, width + n_new, dtype=torch.bool)
    for i, (row, n) in enumerate(zip(rows, lengths)):
        ids[i, width - n :] = row
        pad[i, : width - n] = True
    positions = ((~pad).long().cumsum(dim=1) - 1).clamp(min=0)
    cache = m.new_cache(3, width + n_new)
    steps, start = [], 0
    for end in [width, *range(width + 1, width + n_new + 1)]:
        mask = padding_mask(pad[:, :end])
        steps.append(m(ids[:, start:end], cache=cache, positions=positions[:, start:end], attn_mask=mask))
        start = end
    stepped = torch.cat(steps, dim=1)
    for i, (row, n) in enumerate(zip(rows, lengths)):
        torch.testing.assert_close(stepped[i, width - n :], m(row[None])[0], atol=ATOL, rtol=0)


@torch.no_grad()
def test_generate_pads_and_searches_beams() -> None:
    """``serve.generate`` over a hybrid: greedy rows of a padded batch continue as they do alone, and beam search
    (which reorders the cache, states included) keeps its best beam at least as likely as greedy's answer."""
    from serve import generate

    m = _build(seed=2)
    cfg = specs.GenerationConfig(max_new_tokens=4, do_sample=False)
    short, long = _ids(1, 3, seed=5), _ids(1, 6, seed=6)
    batch = torch.cat([F.pad(short, (3, 0)), long])
    mask = torch.tensor([[0, 0, 0, 1, 1, 1], [1] * 6])
    together = generate(m, batch, cfg, attention_mask=mask)
    assert together[0, 6:].tolist() == generate(m, short, cfg)[0, 3:].tolist()
    assert together[1, 6:].tolist() == generate(m, long, cfg)[0, 6:].tolist()
    beams = generate(m, long, dataclasses.replace(cfg, num_beams=3))
    greedy = generate(m, long, cfg)

    def logprob(seq: torch.Tensor) -> float:
        logp = m(seq[None, :-1]).log_softmax(-1)[0, 5:]
        return float(logp.gather(-1, seq[6:, None]).sum())

    assert logprob(beams[0]) >= logprob(greedy[0]) - 1e-5


def test_paged_and_rollback_are_refused() -> None:
    m = _build()
    with pytest.raises(ValueError, match="paged"):
        m.new_cache(1, 8, paged=specs.PagedSpec(block_size=4))
    cache = m.new_cache(1, 8)
    with torch.no_grad():
        m(_ids(1, 3), cache=cache)
    with pytest.raises(ValueError, match="cannot evict"):
        cache.evict(1)


# ----------------------------------------------------------------------------------------------- cross-cutting


def test_training_reaches_every_parameter() -> None:
    m = _build().train()
    _loss(m, _ids(2, 20)).backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().max() > 0, name


def test_drop_path() -> None:
    """Training drops whole residual branches per sample (reproducibly under a seed); eval is exactly the model
    without DropPath."""
    m = _build(dataclasses.replace(HYBRID, drop_path=0.5))
    plain = _build()
    plain.load_state_dict(m.state_dict())
    ids = _ids(8, 12)
    with torch.no_grad():
        assert torch.equal(m(ids), plain(ids))
        m.train()
        torch.manual_seed(3)
        trained = m(ids)
        torch.manual_seed(3)
        assert torch.equal(m(ids), trained)
        torch.manual_seed(4)
        assert not torch.allclose(m(ids), trained)
    assert (trained - plain(ids)).abs().max() > 1e-3


def test_activation_checkpointing() -> None:
    """Per-block checkpointing gives the same loss and gradients (DropPath draws included); 1e-6 as in
    tests/train/test_wrappers.py: the recomputation replays the same arithmetic."""
    plain = _build(dataclasses.replace(HYBRID, drop_path=0.3)).train()
    wrapped = wrappers.apply_activation_checkpointing(copy.deepcopy(plain)).train()
    ids = _ids(4, 20)
    torch.manual_seed(7)
    loss_plain = _loss(plain, ids)
    torch.manual_seed(7)
    loss_wrapped = _loss(wrapped, ids)
    torch.testing.assert_close(loss_wrapped, loss_plain, atol=1e-6, rtol=0)
    loss_plain.backward()
    loss_wrapped.backward()
    grads = dict(wrapped.named_parameters())
    for name, p in plain.named_parameters():
        torch.testing.assert_close(grads[name].grad, p.grad, atol=1e-6, rtol=0, msg=name)


def test_bf16_autocast() -> None:
    """Under CPU bfloat16 autocast the logits stay close to float32's and the backward is finite. The delta rule
    itself runs in float32 (autocast off inside), so the error is bf16 rounding of the linears and the attention
    layer: logits of magnitude ~1 with a bf16 ulp of ~0.008; we allow 0.05 max and 0.01 mean."""
    m = _build()
    ids = _ids(4, 20)
    with torch.no_grad():
        reference = m(ids)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = m(ids)
        loss = _loss(m, ids)
    assert logits.dtype == torch.bfloat16
    err = (logits.float() - reference).abs()
    print(f"hybrid: bf16 autocast vs float32 logits: max {err.max():.3e}, mean {err.mean():.3e}")
    assert err.max() < 0.05 and err.mean() < 0.01
    loss.backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all() for p in m.parameters())
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):  # decoding under autocast too
        cache = m.new_cache(4, 20, dtype=torch.bfloat16)  # keys/values in bf16, the recurrent state in float32
        stepped = torch.cat([m(ids[:, :12], cache=cache), *(m(ids[:, t : t + 1], cache=cache) for t in range(12, 20))], 1)
    assert (stepped.float() - reference).abs().max() < 0.05


def test_weight_tying() -> None:
    tied = _build(dataclasses.replace(HYBRID, tie_embeddings=True)).train()
    assert tied.lm_head.weight is tied.tok_embeddings.weight
    untied = _build(HYBRID).train()
    untied.load_state_dict({**tied.state_dict(), "lm_head.weight": tied.tok_embeddings.weight.detach().clone()})
    ids = _ids(2, 16)
    _loss(tied, ids).backward()
    _loss(untied, ids).backward()
    summed = untied.tok_embeddings.weight.grad + untied.lm_head.weight.grad
    torch.testing.assert_close(tied.tok_embeddings.weight.grad, summed, atol=1e-6, rtol=0)
    torch.optim.SGD(tied.parameters(), lr=0.1).step()
    assert tied.lm_head.weight is tied.tok_embeddings.weight


def test_checkpoint_round_trip(tmp_path) -> None:
    m = _build()
    model.save_checkpoint(m, tmp_path / "ckpt")
    loaded = model.load_checkpoint(tmp_path / "ckpt")
    assert loaded.config == HYBRID
    ids = _ids(2, 10)
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(ids), m(ids), atol=0, rtol=0)
