"""Sliding-window perplexity against ``transformers`` computing the same windows on the same weights.

The reference is Hugging Face's documented loop ("Perplexity of fixed-length models"): each window's input ids,
labels set to -100 before the window's new tokens, the model's own shifted cross-entropy, weighted by the
number of labels it scored. Tolerance 1e-4 relative (the issue's); float32 on both sides, so what differs is the
order of the matmul reductions (observed ~1e-7).
"""

from __future__ import annotations

import functools
import hashlib
import math

import pytest
import torch
import transformers
from hypothesis import given
from hypothesis import strategies as st

from eval import PerplexityResult, perplexity, sliding_windows
from eval.corpora import WIKITEXT2_TEST, WIKITEXT2_TEST_SHA256


def _hf_perplexity(hf: torch.nn.Module, ids: torch.Tensor, context: int, stride: int) -> tuple[float, int]:
    """Hugging Face's loop, verbatim in its arithmetic: the perplexity and the number of tokens scored."""
    seq_len = ids.size(1)
    nll_sum, n_tokens, prev_end_loc = 0.0, 0, 0
    for begin_loc in range(0, seq_len, stride):
        end_loc = min(begin_loc + context, seq_len)
        trg_len = end_loc - prev_end_loc
        input_ids = ids[:, begin_loc:end_loc]
        target_ids = input_ids.clone()
        target_ids[:, :-trg_len] = -100
        with torch.no_grad():
            loss = hf(input_ids, labels=target_ids).loss
        scored = int((target_ids[:, 1:] != -100).sum())  # the model shifts the labels by one inside
        nll_sum += float(loss) * scored
        n_tokens += scored
        prev_end_loc = end_loc
        if end_loc == seq_len:
            break
    return math.exp(nll_sum / n_tokens), n_tokens


@functools.cache
def _hf_model(folder) -> torch.nn.Module:
    return transformers.AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()


@pytest.mark.parametrize(("context", "stride", "batch"), [(64, 24, 3), (128, 128, 2), (50, 1 + 49 // 2, 1)])
def test_equals_transformers_on_the_same_windows(tiny_pair, context: int, stride: int, batch: int) -> None:
    text = WIKITEXT2_TEST.read_text(encoding="utf-8")[:1200]
    ids = torch.tensor([tiny_pair.tokenizer.encode(text)])
    hf = _hf_model(tiny_pair.hf)
    expected, scored = _hf_perplexity(hf, ids, context, stride)
    got = perplexity(tiny_pair.lm, ids[0], context=context, stride=stride, batch_size=batch, progress=False)
    assert isinstance(got, PerplexityResult)
    assert got.tokens == scored
    if stride < context:
        assert scored == ids.size(1) - 1  # every token after the first, once
    assert got.perplexity == pytest.approx(expected, rel=1e-4)
    assert math.exp(got.nll) == pytest.approx(got.perplexity, rel=1e-12)
    assert got.tokens_per_s > 0


def test_batching_changes_nothing(tiny_pair) -> None:
    ids = torch.randint(0, 300, (300,), generator=torch.Generator().manual_seed(3))
    one = perplexity(tiny_pair.lm, ids, context=100, stride=30, batch_size=1, progress=False)
    many = perplexity(tiny_pair.lm, ids, context=100, stride=30, batch_size=7, progress=False)
    assert many.nll == pytest.approx(one.nll, rel=1e-6)


@given(n=st.integers(2, 300), context=st.integers(2, 80), data=st.data())
def test_every_token_after_the_first_is_scored_once(n: int, context: int, data: st.DataObject) -> None:
    stride = data.draw(st.integers(1, context))
    windows = sliding_windows(n, context, stride)
    scored = [t for w in windows for t in range(w.first, w.end)]
    if stride < context:
        assert scored == list(range(1, n))
    else:  # disjoint chunks: a chunk's first token has no context and is not scored (as in Hugging Face's loop)
        assert scored == [t for t in range(1, n) if t % context]
    for w in windows:
        assert w.begin < w.first <= w.end and w.end - w.begin <= context
        if w is not windows[0]:
            assert w.first - w.begin >= min(context - stride, w.end - w.begin - 1)  # context before each new token


def test_refuses_impossible_settings(tiny_pair) -> None:
    with pytest.raises(ValueError, match="stride"):
        sliding_windows(10, 4, 5)
    with pytest.raises(ValueError, match="context"):
        sliding_windows(10, 1, 1)
    with pytest.raises(ValueError, match="at least 2 tokens"):
        sliding_windows(1, 4, 2)
    with pytest.raises(ValueError, match="max_seq_len"):
        perplexity(tiny_pair.lm, [1, 2, 3], context=129, progress=False)


def test_the_shipped_text_is_wikitext2_test() -> None:
    assert hashlib.sha256(WIKITEXT2_TEST.read_bytes()).hexdigest() == WIKITEXT2_TEST_SHA256
