"""What a forward returns beyond logits: final hidden states for chunked losses, auxiliary losses with the
output they belong to (never left as state from the last call)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import model
import specs


@pytest.fixture(scope="module", params=["llama-tiny", "gpt-shakespeare-char"])
def lm(request) -> torch.nn.Module:
    torch.manual_seed(0)
    return model.build(specs.load_preset(request.param))


def _ids(m, b: int, t: int) -> torch.Tensor:
    return torch.randint(0, m.config.vocab_size, (b, t), generator=torch.Generator().manual_seed(1))


@torch.no_grad()
def test_hidden_through_the_output_head_is_the_logits(lm):
    ids = _ids(lm, 2, 9)
    logits = lm(ids)
    hidden = lm(ids, output="hidden")
    assert isinstance(hidden, specs.LMOutput) and hidden.logits is None and hidden.aux_losses == {}
    assert hidden.hidden.shape == (2, 9, lm.config.d_model)
    assert torch.equal(lm.output_head()(hidden.hidden), logits)
    both = lm(ids, output="all")
    assert torch.equal(both.logits, logits) and torch.equal(both.hidden, hidden.hidden)


def test_chunked_cross_entropy_from_hidden_states_equals_the_full_loss(lm):
    """The contract a trainer relies on: the loss from head(hidden) chunk by chunk (each chunk's logits
    recomputed in the backward, so (B, T, V) never lives in memory at once) equals the plain loss, values and
    gradients (float32; only the reduction order differs)."""
    from torch.utils.checkpoint import checkpoint

    ids = _ids(lm, 2, 12)
    labels = torch.roll(ids, -1, dims=1)
    lm.zero_grad()
    full = F.cross_entropy(lm(ids).flatten(0, 1), labels.flatten())
    full.backward()
    want = {n: p.grad.clone() for n, p in lm.named_parameters()}

    lm.zero_grad()
    hidden = lm(ids, output="hidden").hidden.flatten(0, 1)
    head, flat = lm.output_head(), labels.flatten()

    def chunk_loss(h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(head(h), y, reduction="sum")

    total = sum(checkpoint(chunk_loss, hidden[i : i + 5], flat[i : i + 5], use_reentrant=False) for i in range(0, 24, 5))
    chunked = total / flat.numel()
    chunked.backward()
    torch.testing.assert_close(chunked, full, atol=1e-6, rtol=1e-6)
    for name, p in lm.named_parameters():
        torch.testing.assert_close(p.grad, want[name], atol=1e-6, rtol=1e-5, msg=lambda m, n=name: f"{n}: {m}")


def test_no_aux_loss_state_survives_between_calls(lm):
    """Dense models report an empty dict per call, and the model keeps no per-call attribute for it."""
    assert not hasattr(lm, "aux_losses")
    assert lm(_ids(lm, 1, 3), output="all").aux_losses == {}
