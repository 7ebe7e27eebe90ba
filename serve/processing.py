"""From next-token logits to the distribution a token is picked from, in Hugging Face ``generate``'s order:
repetition penalty, then frequency and presence penalties (OpenAI's, which Hugging Face lacks), then, when
sampling, temperature, top-k, top-p and min-p. Removed tokens get ``-inf``.

Each function takes ``scores (R, V)`` in float32 and returns a new tensor; nothing here syncs with the device,
so a compiled decode step can include it.
"""

from __future__ import annotations

import torch

from specs.generation_config import GenerationConfig

REMOVED = float("-inf")


def process(scores: torch.Tensor, sequences: torch.Tensor, generated: torch.Tensor, cfg: GenerationConfig) -> torch.Tensor:
    """``sequences (R, S)``: every token so far (prompt included), for the repetition penalty; ``generated
    (R, V)``: how often each token was generated so far, for the frequency and presence penalties."""
    if cfg.repetition_penalty != 1.0:
        scores = repetition_penalty(scores, sequences, cfg.repetition_penalty)
    if cfg.frequency_penalty or cfg.presence_penalty:
        scores = scores - cfg.frequency_penalty * generated - cfg.presence_penalty * (generated > 0)
    if not cfg.do_sample:
        return scores
    if cfg.temperature != 1.0:
        scores = scores / cfg.temperature
    if cfg.top_k is not None:
        scores = top_k(scores, cfg.top_k)
    if cfg.top_p is not None and cfg.top_p < 1.0:
        scores = top_p(scores, cfg.top_p)
    if cfg.min_p is not None:
        scores = min_p(scores, cfg.min_p)
    return scores


def repetition_penalty(scores: torch.Tensor, sequences: torch.Tensor, penalty: float) -> torch.Tensor:
    """Every token present in the row: a positive score divided by ``penalty``, a negative one multiplied (the
    CTRL paper's rule, as Hugging Face applies it)."""
    seen = scores.gather(1, sequences)
    seen = torch.where(seen < 0, seen * penalty, seen / penalty)
    return scores.scatter(1, sequences, seen)


def top_k(scores: torch.Tensor, k: int) -> torch.Tensor:
    k = min(k, scores.shape[-1])
    kth = scores.topk(k, dim=-1).values[..., -1:]
    return scores.masked_fill(scores < kth, REMOVED)


def top_p(scores: torch.Tensor, p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose probability reaches ``p`` (at least one)."""
    ordered, order = scores.sort(dim=-1)  # ascending
    cumulative = ordered.softmax(dim=-1).cumsum(dim=-1)
    remove = cumulative <= 1 - p
    remove[..., -1:] = False
    return scores.masked_fill(remove.scatter(1, order, remove), REMOVED)


def min_p(scores: torch.Tensor, p: float) -> torch.Tensor:
    """Remove tokens less likely than ``p`` times the most likely one (the most likely is always kept)."""
    probs = scores.softmax(dim=-1)
    remove = probs < p * probs.amax(dim=-1, keepdim=True)
    remove.scatter_(1, probs.argmax(dim=-1, keepdim=True), False)
    return scores.masked_fill(remove, REMOVED)


def pick(scores: torch.Tensor, cfg: GenerationConfig, generator: torch.Generator | None) -> torch.Tensor:
    """``(R,)`` next tokens: the argmax, or a draw from ``softmax(scores)``."""
    if not cfg.do_sample:
        # max's indices are argmax's (the first of equal maxima), and on the CPU max is faster: 15 against 40 us
        # over a 32000-token vocabulary, measured, on a decode step of ~6 ms.
        return scores.max(dim=-1).indices
    return torch.multinomial(scores.softmax(dim=-1), 1, generator=generator).squeeze(-1)
