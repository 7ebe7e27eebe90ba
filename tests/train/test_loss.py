"""The training loss: labelled tokens only, the chunked path equal to the plain one, auxiliary losses added."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import model
import specs
import train.loss as loss_module
from specs import IGNORE_INDEX, Batch, LMOutput
from train import chunked_cross_entropy, lm_loss


def _batch(vocab: int, b: int = 2, t: int = 10) -> Batch:
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (b, t), generator=gen)
    labels = torch.randint(0, vocab, (b, t), generator=gen)
    labels[0, :3] = IGNORE_INDEX
    return Batch(input_ids=ids, labels=labels)


@pytest.fixture(scope="module")
def lm() -> torch.nn.Module:
    torch.manual_seed(0)
    return model.build(specs.load_preset("llama-tiny"))


def test_plain_loss_is_cross_entropy_over_labelled_tokens(lm):
    batch = _batch(256)
    loss, parts = lm_loss(lm, batch)
    logits = lm(batch.input_ids)
    want = F.cross_entropy(logits.flatten(0, 1), batch.labels.flatten(), ignore_index=IGNORE_INDEX)
    torch.testing.assert_close(loss, want, atol=1e-6, rtol=1e-6)
    assert set(parts) == {"ce"}


def test_chunked_path_equals_the_plain_one_in_value_and_gradient(lm, monkeypatch):
    batch = _batch(256)
    lm.zero_grad()
    plain, _ = lm_loss(lm, batch)
    plain.backward()
    want = [p.grad.clone() for p in lm.parameters()]
    lm.zero_grad()
    monkeypatch.setattr(loss_module, "CHUNK_ABOVE", 0)  # force the chunked path
    monkeypatch.setattr(loss_module, "CHUNK_TOKENS", 7)  # chunks that do not divide the 20 tokens
    chunked, _ = lm_loss(lm, batch)
    chunked.backward()
    torch.testing.assert_close(chunked, plain, atol=1e-6, rtol=1e-6)
    for got, expected in zip((p.grad for p in lm.parameters()), want):
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)


def test_chunked_cross_entropy_ignores_unlabelled_tokens():
    head = torch.nn.Linear(4, 5, bias=False)
    hidden = torch.randn(6, 4)
    labels = torch.tensor([1, IGNORE_INDEX, 3, IGNORE_INDEX, 0, 4])
    got = chunked_cross_entropy(head, hidden, labels, chunk=4)
    keep = labels != IGNORE_INDEX
    torch.testing.assert_close(got, F.cross_entropy(head(hidden[keep]), labels[keep]), atol=1e-6, rtol=1e-6)


class _WithAux(torch.nn.Module):
    """A model that returns auxiliary losses with its output, as an MoE model does."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner, self.config = inner, inner.config

    def forward(self, input_ids, *, positions=None, cache=None, attn_mask=None, output="logits"):
        out = self.inner(input_ids, output="all")
        aux = {"balance": out.hidden.square().mean() * 0.01, "z": torch.tensor(0.25)}
        return LMOutput(hidden=out.hidden, logits=out.logits if output == "all" else None, aux_losses=aux)

    def output_head(self):
        return self.inner.output_head()


def test_auxiliary_losses_are_added_and_reported(lm):
    batch = _batch(256)
    wrapped = _WithAux(lm)
    loss, parts = lm_loss(wrapped, batch)
    plain, _ = lm_loss(lm, batch)
    hidden = lm(batch.input_ids, output="hidden").hidden
    torch.testing.assert_close(loss, plain + hidden.square().mean() * 0.01 + 0.25, atol=1e-6, rtol=1e-6)
    assert set(parts) == {"ce", "balance", "z"}


def test_a_batch_without_labels_is_refused(lm):
    with pytest.raises(ValueError, match="no labels"):
        lm_loss(lm, Batch(input_ids=torch.zeros(1, 4, dtype=torch.int64)))
