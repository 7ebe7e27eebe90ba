"""Speculative decoding: greedy output identical to the target alone, and the sampling rule keeps the target's
distribution (checked statistically on a small vocabulary)."""

from __future__ import annotations

import pytest
import torch

import model
import serve
import specs
from serve.speculative import _verify, speculative_generate
from specs import GenerationConfig


def _lm(seed: int, *overrides: str) -> torch.nn.Module:
    cfg = specs.apply_overrides(specs.load_preset("llama-tiny"), ["init_std=0.1", *overrides])
    torch.manual_seed(seed)
    return model.build(cfg).eval()


@pytest.mark.parametrize("k", [1, 3, 5])
def test_greedy_speculative_is_the_target_alone(k):
    target = _lm(0)
    draft = _lm(1, "n_layers=1")  # another model: it disagrees often, so every rollback path runs
    ids = torch.randint(3, 256, (1, 6), generator=torch.Generator().manual_seed(k))
    cfg = GenerationConfig(max_new_tokens=30, repetition_penalty=1.1)
    result = speculative_generate(target, draft, ids, cfg, k=k)
    assert torch.equal(result.sequences, serve.generate(target, ids, cfg))
    assert 0 <= result.accepted <= result.proposed


def test_a_perfect_draft_is_always_accepted():
    target = _lm(0)
    ids = torch.randint(3, 256, (1, 4), generator=torch.Generator().manual_seed(0))
    cfg = GenerationConfig(max_new_tokens=20)
    result = speculative_generate(target, target, ids, cfg, k=4)
    assert result.acceptance == 1.0 and torch.equal(result.sequences, serve.generate(target, ids, cfg))


def test_eos_and_max_new_tokens_end_the_output_where_the_target_alone_would():
    target, draft = _lm(0), _lm(2, "n_layers=1")
    ids = torch.randint(3, 256, (1, 5), generator=torch.Generator().manual_seed(4))
    alone = serve.generate(target, ids, GenerationConfig(max_new_tokens=12))[0, 5:].tolist()
    stop_at = max(i for i, token in enumerate(alone) if token not in alone[:i])  # a token's first appearance
    assert stop_at >= 5
    cfg = GenerationConfig(max_new_tokens=12, eos_token_ids=(alone[stop_at],))
    got = speculative_generate(target, draft, ids, cfg, k=4).sequences[0, 5:]
    assert got.tolist() == alone[: stop_at + 1]
    short = speculative_generate(target, draft, ids, GenerationConfig(max_new_tokens=3), k=4).sequences[0, 5:]
    assert short.tolist() == alone[:3]


def test_the_acceptance_rule_keeps_the_target_distribution():
    """Many draws of the first token through _verify, with a draft distribution q far from the target's p:
    the emitted tokens follow p (total variation under 0.02 for 20000 draws of 8 tokens; the standard error of
    each frequency is at most 0.0035)."""
    vocab, draws = 8, 20000
    gen = torch.Generator().manual_seed(0)
    p_logits = torch.randn(vocab, generator=gen) * 1.5
    q = torch.softmax(torch.randn(vocab, generator=gen) * 1.5, dim=-1)
    cfg = GenerationConfig(do_sample=True)
    target_logits = torch.stack([p_logits, torch.zeros(vocab)])  # position 0 judges the proposal
    counts = torch.zeros(vocab)
    for _ in range(draws):
        proposal = int(torch.multinomial(q, 1, generator=gen))
        kept, token = _verify(target_logits, [proposal], [q], [0], 1, cfg, gen)
        counts[proposal if kept else token] += 1
    empirical = counts / draws
    p = torch.softmax(p_logits, dim=-1)
    assert 0.5 * (empirical - p).abs().sum() < 0.02
    assert 0.5 * (empirical - q).abs().sum() > 0.1  # not the draft's distribution


def test_sampled_speculative_output_is_reproducible_and_bad_input_is_refused():
    target, draft = _lm(0), _lm(1, "n_layers=1")
    ids = torch.randint(3, 256, (1, 5), generator=torch.Generator().manual_seed(1))
    cfg = GenerationConfig(max_new_tokens=16, do_sample=True, temperature=0.8, top_k=50, seed=5)
    first = speculative_generate(target, draft, ids, cfg, k=3).sequences
    assert torch.equal(speculative_generate(target, draft, ids, cfg, k=3).sequences, first)
    with pytest.raises(ValueError, match="one prompt"):
        speculative_generate(target, draft, torch.zeros(2, 3, dtype=torch.long), cfg)
    with pytest.raises(ValueError, match="vocabulary"):
        speculative_generate(target, _lm(3, "vocab_size=128"), ids, cfg)
