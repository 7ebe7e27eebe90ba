"""enable_onednn_linears: same numbers as F.linear, and nothing else about the model changes."""

from __future__ import annotations

import pytest
import torch

import model
import specs
from model.cpu_inference import _OneDNNForward, enable_onednn_linears

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="PyTorch built without oneDNN")


def _pair(*overrides: str):
    cfg = specs.apply_overrides(specs.load_preset("llama-tiny"), list(overrides))
    torch.manual_seed(0)
    plain = model.build(cfg).eval()
    fast = model.build(cfg).eval()
    fast.load_state_dict(plain.state_dict())
    return plain, enable_onednn_linears(fast)


def _ids(n_vocab: int) -> torch.Tensor:
    return torch.randint(0, n_vocab, (2, 24), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("overrides", [(), ("d_model=256", "mlp.hidden=704", "attention.bias=true")])
def test_logits_match_the_plain_model(overrides):
    plain, fast = _pair(*overrides)
    ids = _ids(plain.config.vocab_size)
    with torch.inference_mode():
        want, got = plain(ids), fast(ids)
    # Both are float32 GEMMs over K <= 704 terms; only the summation order differs (observed <= 3e-6).
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_every_linear_is_routed_and_state_dict_is_untouched():
    plain, fast = _pair()
    linears = [m for m in fast.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all(isinstance(m.forward, _OneDNNForward) for m in linears)
    assert fast.state_dict().keys() == plain.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(fast.state_dict().values(), plain.state_dict().values()))
    wrappers = [m.forward for m in linears]
    assert enable_onednn_linears(fast) is fast
    assert [m.forward for m in linears] == wrappers  # applying twice keeps the first wrappers (and their packs)


def test_training_takes_the_autograd_path_with_identical_gradients():
    plain, fast = _pair()
    ids = _ids(plain.config.vocab_size)
    for m in (plain, fast):
        m.train()
        m(ids).logsumexp(-1).mean().backward()
    for (name, a), (_, b) in zip(plain.named_parameters(), fast.named_parameters()):
        assert torch.equal(a.grad, b.grad), name


def test_in_place_weight_updates_are_seen():
    plain, fast = _pair()
    ids = _ids(plain.config.vocab_size)
    with torch.inference_mode():
        fast(ids)  # packs the weights
    with torch.no_grad():
        for m in (plain, fast):
            m.lm_head.weight.mul_(-0.5)
            m.layers[0].attn.wq.weight.add_(0.1)
    with torch.inference_mode():
        torch.testing.assert_close(fast(ids), plain(ids), atol=1e-5, rtol=1e-5)


def test_other_dtypes_use_the_ordinary_path():
    plain, fast = _pair()
    plain, fast = plain.to(torch.bfloat16), fast.to(torch.bfloat16)
    ids = _ids(plain.config.vocab_size)
    with torch.inference_mode():
        assert torch.equal(fast(ids), plain(ids))  # same F.linear calls, bit for bit


def test_a_model_built_under_inference_mode_works():
    cfg = specs.load_preset("llama-tiny")
    with torch.inference_mode():
        torch.manual_seed(0)
        plain = model.build(cfg).eval()
        torch.manual_seed(0)
        fast = enable_onednn_linears(model.build(cfg).eval())
        ids = _ids(cfg.vocab_size)
        torch.testing.assert_close(fast(ids), plain(ids), atol=1e-5, rtol=1e-5)
