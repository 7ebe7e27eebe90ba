"""EncoderLM (BERT style): the assembler, its inputs, padding, the cross-cutting training features (DropPath,
per-block activation checkpointing, bf16 autocast, weight tying) and checkpoint round trips.

Numerics against an independent oracle (transformers' BERT on the same weights) are in test_hf_bert.py and,
on real MiniLM weights, test_bert_minilm.py.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open

import model
import specs
import train.wrappers as ac
from specs.errors import InputError, ShapeError

BERT_TINY = {
    "kind": "model",
    "version": 4,
    "name": "bert-tiny-test",
    "architecture": "encoder",
    "head": "mlm",
    "vocab_size": 97,
    "d_model": 32,
    "n_layers": 3,
    "max_seq_len": 40,
    "attention": {"n_heads": 4, "bias": True},
    "mlp": {"kind": "gelu", "hidden": 64, "bias": True},
    "positions": "learned",
    "norm": "layernorm",
    "norm_eps": 1e-12,
    "norm_bias": True,
    "residual": "post",
    "final_norm": False,
    "tie_embeddings": True,
    "type_vocab_size": 2,
    "embedding_norm": True,
}


def _cfg(*overrides: str) -> specs.ModelConfig:
    return specs.apply_overrides(specs.from_dict(BERT_TINY, kind="model"), list(overrides))


@torch.no_grad()
def _perturb_(m: torch.nn.Module, seed: int = 1) -> None:
    """Move norms off one and biases off zero, so that every parameter matters."""
    gen = torch.Generator().manual_seed(seed)
    for p in m.parameters():
        p.add_(torch.randn(p.shape, generator=gen) * 0.05)


def _build(cfg: specs.ModelConfig, seed: int = 0) -> model.EncoderLM:
    torch.manual_seed(seed)
    m = model.build(cfg)
    assert isinstance(m, model.EncoderLM)
    _perturb_(m)
    return m.eval()


def _ids(cfg: specs.ModelConfig, batch: int, seq: int, seed: int = 2) -> torch.Tensor:
    return torch.randint(0, cfg.vocab_size, (batch, seq), generator=torch.Generator().manual_seed(seed))


def _padded_batch(cfg: specs.ModelConfig, lengths: list[int], seq: int) -> tuple[torch.Tensor, torch.Tensor]:
    ids = _ids(cfg, len(lengths), seq)
    pad = torch.arange(seq)[None, :] >= torch.tensor(lengths)[:, None]
    return ids, pad


def _mlm_loss(m: model.EncoderLM, ids: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
    hidden = m(ids, key_padding_mask=pad, token_type_ids=(torch.arange(ids.shape[1]) >= 4).long().expand_as(ids))
    logits = m.output_head()(hidden)
    labels = ids.masked_fill(pad, -100)
    return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)


# ------------------------------------------------------------------------------------------------- assembly


def test_build_returns_an_encoder_that_meets_the_protocols() -> None:
    m = _build(_cfg())
    assert isinstance(m, specs.EncoderModel) and isinstance(m, specs.ParallelizableModel)
    assert m.fsdp_units() == list(m.layers) and all(not layer.attn.causal for layer in m.layers)
    ids, pad = _padded_batch(m.config, [7, 12], 12)
    with torch.no_grad():
        hidden = m(ids, key_padding_mask=pad)
        logits = m.output_head()(hidden)
    assert hidden.shape == (2, 12, 32) and logits.shape == (2, 12, 97)
    assert set(m.tp_plan().values()) <= {"colwise", "rowwise"}


def test_head_none_has_no_output_head_and_no_head_weights() -> None:
    m = _build(_cfg("head=none"))
    assert not any(name.startswith("mlm_head") for name in m.state_dict())
    with pytest.raises(ValueError, match="head 'none'"):
        m.output_head()


def test_attention_is_bidirectional() -> None:
    """Changing the last token changes the first token's output (a causal model could not)."""
    m = _build(_cfg())
    ids = _ids(m.config, 1, 10)
    other = ids.clone()
    other[0, -1] = (other[0, -1] + 1) % m.config.vocab_size
    with torch.no_grad():
        assert not torch.allclose(m(ids)[0, 0], m(other)[0, 0])


def test_token_types_default_to_zero_and_change_the_output() -> None:
    m = _build(_cfg())
    ids = _ids(m.config, 2, 9)
    with torch.no_grad():
        plain = m(ids)
        torch.testing.assert_close(m(ids, token_type_ids=torch.zeros_like(ids)), plain, atol=0, rtol=0)
        assert not torch.allclose(m(ids, token_type_ids=torch.ones_like(ids)), plain)


@pytest.mark.parametrize(
    "overrides",
    [
        ["residual=pre", "final_norm=true", "norm=rmsnorm", "norm_bias=false", "embedding_norm=false"],
        ["type_vocab_size=0", "positions=sinusoidal", "embedding_scale=2.0", "final_softcap=5.0"],
        ["tie_embeddings=false", "attention.n_kv_heads=2", "mlp.kind=swiglu"],
    ],
    ids=["pre-norm-rms", "no-types-sinusoidal-scaled-capped", "untied-gqa-swiglu"],
)
def test_encoder_variants_build_and_run(overrides: list[str]) -> None:
    m = _build(_cfg(*overrides))
    ids, pad = _padded_batch(m.config, [5, 8], 8)
    loss = _mlm_loss(m.train(), ids, pad) if m.config.type_vocab_size else None
    if loss is None:
        hidden = m(ids, key_padding_mask=pad)
        loss = m.output_head()(hidden).logsumexp(-1).mean()
        assert m.output_head()(hidden).abs().max() < 5.0  # soft-capped
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None for p in m.parameters())


# ---------------------------------------------------------------------------------------------------- inputs


def test_bad_inputs_are_refused_with_the_way_out() -> None:
    m = _build(_cfg())
    ids = _ids(m.config, 2, 8)
    with pytest.raises(InputError, match="attention_mask == 0"):
        m(ids, key_padding_mask=torch.ones(2, 8, dtype=torch.long))
    with pytest.raises(ShapeError, match="key_padding_mask"):
        m(ids, key_padding_mask=torch.zeros(2, 7, dtype=torch.bool))
    with pytest.raises(InputError, match="token_type_ids range over 0..2"):
        m(ids, token_type_ids=torch.arange(8).remainder(3).expand(2, -1))
    with pytest.raises(InputError, match="beyond max_seq_len 40"):
        m(_ids(m.config, 1, 41))
    with pytest.raises(InputError, match="outside the vocabulary"):
        m(ids + 97)
    no_types = _build(_cfg("type_vocab_size=0"))
    with pytest.raises(InputError, match="no token types"):
        no_types(ids, token_type_ids=torch.zeros_like(ids))


# --------------------------------------------------------------------------------------------------- padding


@torch.no_grad()
def test_real_tokens_do_not_depend_on_the_padding_that_follows() -> None:
    """A row of 6 real tokens, alone and followed by 2, 10 or 34 padding tokens holding arbitrary ids: the real
    tokens' states agree (up to kernel reduction order; the shapes differ, so "auto" may pick other kernels)."""
    m = _build(_cfg())
    real = _ids(m.config, 1, 6, seed=3)
    types = torch.tensor([[0, 0, 0, 1, 1, 1]])
    alone = m(real, token_type_ids=types)
    for extra in (2, 10, 34):
        junk = _ids(m.config, 1, extra, seed=extra)
        ids = torch.cat([real, junk], dim=1)
        pad = torch.arange(6 + extra)[None, :] >= 6
        types_padded = torch.cat([types, torch.ones(1, extra, dtype=torch.long)], dim=1)
        out = m(ids, key_padding_mask=pad, token_type_ids=types_padded)
        torch.testing.assert_close(out[:, :6], alone, atol=2e-6, rtol=0, msg=f"{extra} padding tokens")


@torch.no_grad()
def test_rows_of_a_padded_batch_equal_each_row_alone() -> None:
    m = _build(_cfg())
    lengths = [3, 11, 7]
    ids, pad = _padded_batch(m.config, lengths, 11)
    batched = m(ids, key_padding_mask=pad)
    for row, n in enumerate(lengths):
        torch.testing.assert_close(batched[row, :n], m(ids[row : row + 1, :n])[0], atol=2e-6, rtol=0)


# ------------------------------------------------------------------------------------------ training features


def test_drop_path_is_random_in_training_and_off_in_eval() -> None:
    m = _build(_cfg("drop_path=0.5"))
    assert any(layer.branch_drop[1].p > 0 for layer in m.layers)
    ids, pad = _padded_batch(m.config, [8, 5, 8, 6], 8)
    m.train()
    assert not torch.equal(m(ids, key_padding_mask=pad), m(ids, key_padding_mask=pad))
    m.eval()
    plain = _build(_cfg())  # same seed, same weights, no drop-path
    with torch.no_grad():
        out = m(ids, key_padding_mask=pad)
        assert torch.equal(out, m(ids, key_padding_mask=pad))
        torch.testing.assert_close(out, plain(ids, key_padding_mask=pad), atol=0, rtol=0)


def test_activation_checkpointing_per_block_gives_identical_gradients(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dropout, attention dropout and drop-path all on: the recomputation replays the same random masks. The
    kernel is named, since "auto" times candidates on a new shape bucket, which draws from the RNG."""
    calls = []
    original = ac.checkpoint
    monkeypatch.setattr(ac, "checkpoint", lambda *a, **k: calls.append(1) or original(*a, **k))
    plain = _build(_cfg("dropout=0.1", "attention.dropout=0.1", "drop_path=0.2", "attention.kernel=manual")).train()
    wrapped = ac.apply_activation_checkpointing(copy.deepcopy(plain))
    assert list(wrapped.state_dict()) == list(plain.state_dict())
    ids, pad = _padded_batch(plain.config, [12, 9], 12)
    losses = []
    for m in (plain, wrapped):
        torch.manual_seed(7)
        loss = _mlm_loss(m, ids, pad)
        loss.backward()
        losses.append(loss)
    assert len(calls) == plain.config.n_layers
    torch.testing.assert_close(losses[1], losses[0], atol=1e-6, rtol=0)
    grads = dict(wrapped.named_parameters())
    for name, p in plain.named_parameters():
        torch.testing.assert_close(grads[name].grad, p.grad, atol=1e-6, rtol=0, msg=name)


def test_bf16_autocast_forward_and_backward_are_finite_and_close_to_fp32() -> None:
    """bf16 keeps 8 significant bits (2^-9 ~ 2e-3 relative per rounding). Autocast rounds the matmul inputs and
    outputs to bf16 but runs LayerNorm in fp32, and the hidden states are LayerNorm outputs of O(1): after 3
    blocks the observed worst case is ~2e-3 and the mean ~5e-4; we allow max 0.01 and mean 0.002 (a wrong
    padding mask moves them by ~0.06 max, ~7e-3 mean). The loss moves by well under 1%."""
    m = _build(_cfg())
    ids, pad = _padded_batch(m.config, [12, 7], 12)
    m.train()
    reference = _mlm_loss(m, ids, pad)
    reference.backward()
    ref_grads = {n: p.grad.clone() for n, p in m.named_parameters()}
    m.zero_grad()
    with torch.no_grad():
        fp32_hidden = m.eval()(ids, key_padding_mask=pad)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16_hidden = m(ids, key_padding_mask=pad)
        loss = _mlm_loss(m.train(), ids, pad)
    loss.backward()
    assert bf16_hidden.dtype == torch.float32  # autocast runs LayerNorm (the last op of a post-norm block) in fp32
    diff = (bf16_hidden.float() - fp32_hidden)[~pad]
    print(f"bf16 autocast: hidden max {diff.abs().max():.3e}, mean {diff.abs().mean():.3e}; loss {loss:.4f} vs "
          f"{reference:.4f}")
    assert 0 < diff.abs().max() < 0.01 and diff.abs().mean() < 0.002
    assert torch.isfinite(loss) and abs(loss.item() - reference.item()) < 0.01 * reference.item()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.dtype == torch.float32  # autocast keeps the parameters (and their gradients) in fp32
    cosine = F.cosine_similarity(m.tok_embeddings.weight.grad.flatten(), ref_grads["tok_embeddings.weight"].flatten(), dim=0)
    assert cosine > 0.99


# ---------------------------------------------------------------------------------------- tying, checkpoints


def test_mlm_decoder_is_tied_to_the_embeddings() -> None:
    m = _build(_cfg())
    assert m.mlm_head.decoder.weight is m.tok_embeddings.weight
    untied = _build(_cfg("tie_embeddings=false"))
    assert untied.mlm_head.decoder.weight is not untied.tok_embeddings.weight
    assert model.count_parameters(untied.config) - model.count_parameters(m.config) == 97 * 32
    assert model.count_parameters(m.config) == sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize(
    "overrides", [[], ["tie_embeddings=false"], ["head=none"]], ids=["mlm-tied", "mlm-untied", "hidden-only"]
)
def test_checkpoint_round_trip_is_exact(tmp_path, overrides: list[str]) -> None:
    m = _build(_cfg(*overrides))
    model.save_checkpoint(m, tmp_path / "ckpt")
    with safe_open(str(tmp_path / "ckpt" / "model.safetensors"), framework="pt") as fh:
        stored = set(fh.keys())
    tied = m.config.tie_embeddings and m.config.head == "mlm"
    assert ("mlm_head.decoder.weight" in stored) == (m.config.head == "mlm" and not tied)
    assert model.verify_checkpoint(tmp_path / "ckpt") == []
    back = model.load_checkpoint(tmp_path / "ckpt")
    assert isinstance(back, model.EncoderLM) and back.config == m.config and not back.training
    if tied:
        assert back.mlm_head.decoder.weight is back.tok_embeddings.weight  # re-tied, not two copies
    assert back.state_dict().keys() == m.state_dict().keys()
    for name, tensor in m.state_dict().items():
        assert torch.equal(back.state_dict()[name], tensor), name
    ids, pad = _padded_batch(m.config, [9, 4], 9)
    with torch.no_grad():
        assert torch.equal(back(ids, key_padding_mask=pad), m(ids, key_padding_mask=pad))
