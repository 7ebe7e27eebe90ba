"""Perplexity of a causal LM on a token stream, by the sliding-window method.

The method Hugging Face documents for fixed-length models ("Perplexity of fixed-length models" in the
transformers guide): windows of ``context`` tokens start every ``stride`` tokens; each window scores only the
tokens no earlier window scored, so every token after the first is scored exactly once, and every one but
those of the first window sees at least ``context - stride`` tokens before it. ``stride == context`` cuts the
text into disjoint chunks (fast, little context at each chunk's start, and a chunk's first token, which has
none, is not scored -- as in Hugging Face's loop); a small stride approaches the ideal of
full context for every token at the cost of one forward per ``stride`` tokens. The first token has nothing to
be predicted from and is not scored.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm import tqdm

from eval.scoring import score_last_tokens
from specs.protocols import CausalLM


@dataclass(frozen=True, slots=True)
class Window:
    """Tokens ``begin:end`` of the stream go through the model; ``first:end`` are scored (``begin < first``)."""

    begin: int
    end: int
    first: int


@dataclass(frozen=True, slots=True)
class PerplexityResult:
    """``nll``: mean negative log-likelihood per scored token (nats); ``perplexity``: ``exp(nll)``; ``tokens``:
    how many were scored; ``tokens_per_s``: scored tokens per second of wall time."""

    perplexity: float
    nll: float
    tokens: int
    tokens_per_s: float
    context: int
    stride: int

    def as_dict(self) -> dict[str, float | int]:
        return {
            "perplexity": self.perplexity,
            "nll": self.nll,
            "tokens": self.tokens,
            "tokens_per_s": self.tokens_per_s,
            "context": self.context,
            "stride": self.stride,
        }


def sliding_windows(n_tokens: int, context: int, stride: int) -> list[Window]:
    """The windows over a stream of ``n_tokens``: the ``begin``/``end`` of Hugging Face's loop, scoring from the
    previous window's end (from token 1 in the first)."""
    if context < 2:
        raise ValueError(f"a window needs at least 2 tokens (one of context, one scored); got a context of {context}")
    if not 0 < stride <= context:
        raise ValueError(f"the stride ({stride}) must be at least 1 and at most the context ({context})")
    if n_tokens < 2:
        raise ValueError(f"perplexity needs at least 2 tokens (the first is only context); got {n_tokens}")
    windows, previous_end = [], 0
    for begin in range(0, n_tokens, stride):
        end = min(begin + context, n_tokens)
        windows.append(Window(begin, end, max(previous_end, begin + 1)))
        previous_end = end
        if end == n_tokens:
            break
    return windows


def perplexity(
    lm: CausalLM,
    tokens: Sequence[int] | torch.Tensor,
    *,
    context: int | None = None,
    stride: int | None = None,
    batch_size: int = 1,
    progress: bool = True,
    device: torch.device | str | None = None,
) -> PerplexityResult:
    """Perplexity of ``lm`` on ``tokens`` with windows of ``context`` tokens (default and most: the model's
    ``max_seq_len``) every ``stride`` tokens (default: half the context), ``batch_size`` windows a forward."""
    ids = torch.as_tensor(tokens, dtype=torch.long).reshape(-1).tolist()
    limit = lm.config.max_seq_len
    context = context or limit
    if context > limit:
        raise ValueError(f"a context of {context} tokens is over the model's max_seq_len of {limit}")
    stride = stride or max(1, context // 2)
    if batch_size < 1:
        raise ValueError(f"the batch size must be at least 1; got {batch_size}")
    windows = sliding_windows(len(ids), context, stride)
    total = 0.0
    count = 0
    start = time.perf_counter()
    with tqdm(total=len(ids) - 1, desc="perplexity", unit="tok", disable=not progress, dynamic_ncols=True) as bar:
        for i in range(0, len(windows), batch_size):
            batch = windows[i : i + batch_size]
            scores = score_last_tokens(
                lm, [ids[w.begin : w.end] for w in batch], [w.end - w.first for w in batch], device=device
            )
            total -= sum(s.logprob for s in scores)
            scored = sum(w.end - w.first for w in batch)
            count += scored
            bar.update(scored)
    elapsed = time.perf_counter() - start
    nll = total / count
    return PerplexityResult(
        perplexity=math.exp(nll),
        nll=nll,
        tokens=count,
        tokens_per_s=count / elapsed if elapsed > 0 else math.inf,
        context=context,
        stride=stride,
    )
