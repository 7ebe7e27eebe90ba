"""train.wrappers: activation checkpointing and compile, applied from outside, invisible in names and numerics.

Tolerance for gradients: the checkpointed backward recomputes each layer's forward with the same inputs,
weights and (restored) RNG state, so the recomputed activations are bitwise those of the first forward on
the same machine and thread count; ``atol=1e-6`` (float32, gradients of O(1e-2)) only leaves room for a
different reduction order in autograd, which we have not observed.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import model
import specs
import train.wrappers as ac

ATOL = 1e-6  # see the module docstring

VARIANTS = {
    "llama-tiny": ("llama-tiny", []),
    # Dropout everywhere in train mode: recomputation must replay the same masks (RNG state restored). The
    # kernel is named because "auto" times its candidates on the first call of a shape bucket, which draws
    # from the global RNG when dropout > 0 (see test_decoder.py::test_train_forward_is_reproducible_under_a_seed).
    "gpt-dropout": (
        "gpt-shakespeare-char",
        ["dropout=0.1", "attention.dropout=0.1", "drop_path=0.2", "attention.kernel=manual"],
    ),
}


def _pair(variant: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    preset, overrides = VARIANTS[variant]
    torch.manual_seed(0)
    plain = model.build(specs.apply_overrides(specs.load_preset(preset), overrides))
    wrapped = ac.apply_activation_checkpointing(copy.deepcopy(plain))
    return plain, wrapped


def _loss(m: torch.nn.Module, ids: torch.Tensor, seed: int) -> torch.Tensor:
    torch.manual_seed(seed)  # same dropout draws for both models
    logits = m(ids[:, :-1])
    return F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten())


class _CountCheckpoint:
    """Counts calls of torch.utils.checkpoint.checkpoint made by the wrapper."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        original = ac.checkpoint

        def counting(*args, **kwargs):
            self.calls += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(ac, "checkpoint", counting)


def test_returns_the_model_and_keeps_state_dict() -> None:
    plain, _ = _pair("llama-tiny")
    keys = list(plain.state_dict())
    same = ac.apply_activation_checkpointing(plain)
    assert same is plain
    assert list(plain.state_dict()) == keys
    assert all(not k.startswith("_") and "checkpoint" not in k for k in plain.state_dict())


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_loss_and_gradients_equal_the_unwrapped_model(variant: str, monkeypatch: pytest.MonkeyPatch) -> None:
    counter = _CountCheckpoint(monkeypatch)
    plain, wrapped = _pair(variant)
    plain.train()
    wrapped.train()
    assert list(plain.state_dict()) == list(wrapped.state_dict())
    ids = torch.randint(0, plain.config.vocab_size, (2, 17), generator=torch.Generator().manual_seed(1))
    loss_plain, loss_wrapped = _loss(plain, ids, seed=5), _loss(wrapped, ids, seed=5)
    assert counter.calls == plain.config.n_layers  # each layer went through checkpoint once
    torch.testing.assert_close(loss_wrapped, loss_plain, atol=ATOL, rtol=0)
    loss_plain.backward()
    loss_wrapped.backward()
    grads = dict(wrapped.named_parameters())
    for name, p in plain.named_parameters():
        assert p.grad is not None and grads[name].grad is not None, name
        torch.testing.assert_close(grads[name].grad, p.grad, atol=ATOL, rtol=0, msg=name)


def test_idempotent(monkeypatch: pytest.MonkeyPatch) -> None:
    plain, wrapped = _pair("llama-tiny")
    ac.apply_activation_checkpointing(wrapped)  # a second application wraps nothing again
    counter = _CountCheckpoint(monkeypatch)
    ids = torch.randint(0, plain.config.vocab_size, (2, 9), generator=torch.Generator().manual_seed(2))
    loss = _loss(wrapped, ids, seed=0)
    assert counter.calls == plain.config.n_layers  # not 2 * n_layers: no checkpoint inside a checkpoint
    loss.backward()
    ref = _loss(plain, ids, seed=0)
    ref.backward()
    torch.testing.assert_close(loss, ref, atol=ATOL, rtol=0)
    for (name, p), q in zip(plain.named_parameters(), wrapped.parameters()):
        torch.testing.assert_close(q.grad, p.grad, atol=ATOL, rtol=0, msg=name)


def test_no_grad_forward_and_cached_decode(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under no_grad nothing is checkpointed (nothing to save), so cached decoding works and matches."""
    plain, wrapped = _pair("llama-tiny")
    plain.eval()
    wrapped.eval()
    counter = _CountCheckpoint(monkeypatch)
    ids = torch.randint(0, plain.config.vocab_size, (2, 10), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        full = wrapped(ids)
        assert not full.requires_grad
        assert torch.equal(full, plain(ids))
        cache = wrapped.new_cache(2, 10)
        stepped = torch.cat([wrapped(ids[:, :7], cache=cache), wrapped(ids[:, 7:], cache=cache)], dim=1)
    with torch.inference_mode():
        assert torch.equal(wrapped(ids), full)
    assert counter.calls == 0
    # decode == forward in float32; see tests/model/test_decode_equals_forward.py for the 1e-5 justification
    torch.testing.assert_close(stepped, full, atol=1e-5, rtol=0)
