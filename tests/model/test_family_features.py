"""DropPath, activation checkpointing, bf16 autocast and weight tying in the families of the Hugging Face
import: Llama with each long-context RoPE scaling (run past its original context) and GPT-2. Each family's
config comes from its own ``config_from_hf`` on a tiny ``config.json``, so these are the models ``from_hf``
builds.
"""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
import torch.nn.functional as F

import model
import train.wrappers as wrappers
from model.hf_gpt2 import GPT2Family
from model.hf_llama import LlamaFamily
from tests.model.conftest import TINY_LLAMA

LLAMA = dict(model_type="llama", **TINY_LLAMA, num_key_value_heads=2, max_position_embeddings=64)
ROPES = {
    "llama3": dict(rope_type="llama3", factor=4.0, low_freq_factor=1.0, high_freq_factor=4.0,
                   original_max_position_embeddings=16),
    "yarn": dict(rope_type="yarn", factor=4.0, original_max_position_embeddings=16),
    "dynamic": dict(rope_type="dynamic", factor=4.0),  # measured from max_position_embeddings: 16 below
}
GPT2 = dict(model_type="gpt2", n_embd=64, n_layer=2, n_head=4, n_positions=64, vocab_size=256,
            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)


def _config(family: str, **hf_overrides):
    if family == "gpt2":
        return GPT2Family().config_from_hf({**GPT2, **hf_overrides}, name="gpt2-tiny", dtype="float32")
    rope = ROPES[family.removeprefix("llama-")]
    hf = {**LLAMA, "rope_parameters": {"rope_theta": 10000.0, **rope}, **hf_overrides}
    if rope["rope_type"] == "dynamic":
        hf["max_position_embeddings"] = 16
    return LlamaFamily().config_from_hf(hf, name=family, dtype="float32")


FAMILIES = ["llama-llama3", "llama-yarn", "llama-dynamic", "gpt2"]
SEQ = 40  # past the original context (16) of every Llama case; within GPT-2's 64 positions


def _build(cfg, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    m = model.build(cfg)
    with torch.no_grad():  # norm scales and biases off their identity/zero start
        gen = torch.Generator().manual_seed(seed + 1)
        for p in m.parameters():
            if p.dim() == 1:
                p.add_(torch.randn(p.shape, generator=gen) * 0.1)
    return m


def _ids(cfg, batch: int = 4, seq: int = SEQ, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, cfg.vocab_size, (batch, seq), generator=torch.Generator().manual_seed(seed))


def _loss(m: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    logits = m(ids[:, :-1])
    return F.cross_entropy(logits.flatten(0, 1).float(), ids[:, 1:].flatten())


def test_configs_are_the_families() -> None:
    assert [_config(f).rope.scaling for f in FAMILIES[:3]] == ["llama3", "yarn", "dynamic"]
    assert all(_config(f).rope.original_max_seq_len == 16 < SEQ for f in FAMILIES[:3])
    gpt2 = _config("gpt2")
    assert (gpt2.positions, gpt2.tie_embeddings, gpt2.mlp.gelu_approximate) == ("learned", True, "tanh")


@pytest.mark.parametrize("family", FAMILIES)
def test_drop_path(family: str) -> None:
    """Training drops whole residual branches per sample (reproducibly under a seed); eval is the model without
    DropPath, exactly; gradients reach every parameter."""
    cfg = dataclasses.replace(_config(family), drop_path=0.5)
    m, plain = _build(cfg), _build(_config(family))
    plain.load_state_dict(m.state_dict())
    ids = _ids(cfg, batch=8)
    with torch.no_grad():
        m.eval()
        assert torch.equal(m(ids), plain.eval()(ids))
        evaluated = m(ids)
        m.train()
        torch.manual_seed(3)
        trained = m(ids)
        torch.manual_seed(3)
        assert torch.equal(m(ids), trained)
        torch.manual_seed(4)
        assert not torch.allclose(m(ids), trained)  # other samples lose their branches under another seed
    assert (trained - evaluated).abs().max() > 1e-3  # dropped branches, and kept ones scaled by 1 / (1 - p)
    _loss(m, ids).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())


@pytest.mark.parametrize("family", FAMILIES)
def test_activation_checkpointing(family: str) -> None:
    """Per-block checkpointing (train.wrappers) gives the same loss and gradients, DropPath draws included.
    Tolerance 1e-6 as in tests/train/test_wrappers.py: the recomputation replays the same arithmetic."""
    cfg = dataclasses.replace(_config(family), drop_path=0.3)
    plain = _build(cfg).train()
    wrapped = wrappers.apply_activation_checkpointing(copy.deepcopy(plain)).train()
    ids = _ids(cfg)
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


@pytest.mark.parametrize("family", FAMILIES)
def test_bf16_autocast(family: str) -> None:
    """Under CPU bfloat16 autocast the logits stay close to float32's and the backward is finite. RoPE tables
    are still formed in float32 (positions past the original context here), so the error is bf16 rounding
    of the matmuls only: logits of magnitude ~2 with a bf16 ulp of ~0.016 there; observed max ~0.011 and
    mean ~0.002, so we allow 0.05 and 0.01 (wrong positions move these logits by 0.1-2)."""
    cfg = _config(family, initializer_range=0.05)
    m = _build(cfg)
    ids = _ids(cfg)
    with torch.no_grad():
        reference = m(ids)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = m(ids)
        loss = _loss(m, ids)
    assert logits.dtype == torch.bfloat16
    err = (logits.float() - reference).abs()
    print(f"{family}: bf16 autocast vs float32 logits: max {err.max():.3e}, mean {err.mean():.3e}")
    assert err.max() < 0.05 and err.mean() < 0.01
    loss.backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all() for p in m.parameters())


@pytest.mark.parametrize("family", ["gpt2", "llama-yarn"])
def test_weight_tying(family: str) -> None:
    """GPT-2 ties the head to the token embeddings by default (Llama when tie_word_embeddings is set): one
    parameter, whose gradient is the sum of both uses, and which stays shared through an optimizer step."""
    tied_cfg = _config(family) if family == "gpt2" else _config(family, tie_word_embeddings=True)
    tied = _build(tied_cfg)
    assert tied.lm_head.weight is tied.tok_embeddings.weight
    assert sum(1 for n, _ in tied.named_parameters() if n.endswith(("tok_embeddings.weight", "lm_head.weight"))) == 1
    untied = _build(dataclasses.replace(tied_cfg, tie_embeddings=False))
    untied.load_state_dict({**tied.state_dict(), "lm_head.weight": tied.tok_embeddings.weight.detach().clone()})
    ids = _ids(tied_cfg)
    _loss(tied, ids).backward()
    _loss(untied, ids).backward()
    summed = untied.tok_embeddings.weight.grad + untied.lm_head.weight.grad
    torch.testing.assert_close(tied.tok_embeddings.weight.grad, summed, atol=1e-6, rtol=0)
    torch.optim.SGD(tied.parameters(), lr=0.1).step()
    assert tied.lm_head.weight is tied.tok_embeddings.weight
