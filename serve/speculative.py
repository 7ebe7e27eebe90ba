"""Speculative decoding: a small draft model proposes ``k`` tokens, the target model checks them in one forward.

Greedy: a proposal is kept while it is the target's own argmax, and the first disagreement is replaced by the
target's choice, so the output is exactly the target's greedy output, only faster when the draft agrees often.
Sampling: proposal ``d`` drawn from the draft's distribution ``q`` is kept with probability ``min(1, p(d) /
q(d))``; on the first rejection a token is drawn from ``max(0, p - q)`` renormalised; when all ``k`` are kept,
one more is drawn from ``p``. Each emitted token is then distributed exactly as the target's ``p`` (Leviathan
et al. 2023, "Fast Inference from Transformers via Speculative Decoding"). ``p`` and ``q`` are the processed
distributions (penalties, temperature, top-k/p, min-p), each computed for its own prefix.

Both models keep a KV cache; rejected tokens are rolled back with ``cache.evict``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from serve.processing import pick, process
from specs.generation_config import GenerationConfig
from specs.protocols import CausalLM


@dataclass(frozen=True, slots=True)
class SpeculativeResult:
    sequences: torch.Tensor  # (1, T + new)
    proposed: int  # draft tokens proposed
    accepted: int  # of which the target kept

    @property
    def acceptance(self) -> float:
        return self.accepted / self.proposed if self.proposed else 0.0


@torch.no_grad()
def speculative_generate(
    target: CausalLM, draft: CausalLM, input_ids: torch.Tensor, cfg: GenerationConfig, *, k: int = 4
) -> SpeculativeResult:
    """Decode one prompt ``(1, T)`` with ``target``, proposals from ``draft`` (same vocabulary), ``k`` at a time."""
    if input_ids.dim() != 2 or input_ids.shape[0] != 1:
        raise ValueError(f"speculative decoding takes one prompt (1, T), got shape {list(input_ids.shape)}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if cfg.num_beams > 1 or cfg.n > 1:
        raise ValueError("speculative decoding draws one sequence: num_beams and n must be 1")
    if draft.config.vocab_size != target.config.vocab_size:
        raise ValueError(f"the draft's vocabulary ({draft.config.vocab_size}) is not the target's ({target.config.vocab_size})")
    prompt_len = input_ids.shape[1]
    total = prompt_len + cfg.max_new_tokens + k + 1  # room for a round that overshoots before trimming
    for name, m in (("target", target), ("draft", draft)):
        if total > m.config.max_seq_len:
            raise ValueError(f"prompt + max_new_tokens + k needs {total} positions, over the {name}'s context of "
                             f"{m.config.max_seq_len}")
    generator = torch.Generator(device=input_ids.device).manual_seed(cfg.seed) if cfg.seed is not None else None
    eos = set(cfg.eos_token_ids)
    target_cache, draft_cache = target.new_cache(1, total), draft.new_cache(1, total)
    sequence = input_ids[0].tolist()
    # Invariant: the target's cache holds all of ``sequence`` but its newest token (each round feeds it first);
    # the draft's cache holds all of it but ``draft_pending``.
    if prompt_len > 1:  # only the caches are wanted: no output head over the prompt
        target(input_ids[:, :-1], cache=target_cache, output="hidden")
        draft(input_ids[:, :-1], cache=draft_cache, output="hidden")
    draft_pending = sequence[-1:]
    proposed = accepted = 0
    while len(sequence) - prompt_len < cfg.max_new_tokens and not (len(sequence) > prompt_len and sequence[-1] in eos):
        proposals, draft_probs = _propose(draft, draft_cache, draft_pending, sequence, prompt_len, cfg, k, generator)
        fed = torch.tensor([[sequence[-1], *proposals]], device=input_ids.device)
        target_logits = target(fed, cache=target_cache)[0]  # (k + 1, V): position i predicts proposal i
        kept, token = _verify(target_logits, proposals, draft_probs, sequence, prompt_len, cfg, generator)
        proposed, accepted = proposed + k, accepted + kept
        sequence += [*proposals[:kept], token]
        target_cache.evict(k - kept)
        draft_pending = _roll_back_draft(draft_cache, proposals, kept, token)
    new = _trim(sequence[prompt_len:], cfg, eos)
    return SpeculativeResult(torch.tensor([sequence[:prompt_len] + new], device=input_ids.device), proposed, accepted)


def _propose(draft, cache, pending, sequence, prompt_len, cfg, k, generator) -> tuple[list[int], list[torch.Tensor]]:
    """``k`` draft tokens after ``sequence`` (the draft cache lacks ``pending``), with the distributions they
    were drawn from (for the sampling rule)."""
    device = cache.seq_lens.device
    logits = draft(torch.tensor([pending], device=device), cache=cache)[0, -1]
    proposals: list[int] = []
    probs: list[torch.Tensor] = []
    for i in range(k):
        scores = _scores(logits, sequence + proposals, prompt_len, cfg)
        token = int(pick(scores[None], cfg, generator)[0])
        probs.append(scores.softmax(dim=-1))
        proposals.append(token)
        if i < k - 1:
            logits = draft(torch.tensor([[token]], device=device), cache=cache)[0, -1]
    return proposals, probs


def _verify(target_logits, proposals, draft_probs, sequence, prompt_len, cfg, generator) -> tuple[int, int]:
    """How many proposals the target keeps, and the token it adds after them."""
    for i, proposal in enumerate(proposals):
        scores = _scores(target_logits[i], sequence + proposals[:i], prompt_len, cfg)
        if not cfg.do_sample:
            choice = int(scores.argmax())
            if choice != proposal:
                return i, choice
            continue
        p, q = scores.softmax(dim=-1), draft_probs[i]
        draw = torch.rand((), generator=generator, device=p.device)
        if draw * q[proposal] <= p[proposal]:  # kept with probability min(1, p / q)
            continue
        residual = (p - q).clamp(min=0)
        return i, int(torch.multinomial(residual / residual.sum(), 1, generator=generator))
    scores = _scores(target_logits[len(proposals)], sequence + proposals, prompt_len, cfg)
    return len(proposals), int(pick(scores[None], cfg, generator)[0])


def _scores(logits: torch.Tensor, sequence: list[int], prompt_len: int, cfg: GenerationConfig) -> torch.Tensor:
    """The processed scores of one position, for the sequence before it (generated tokens counted for the
    frequency and presence penalties)."""
    seq = torch.tensor([sequence], device=logits.device)
    counts = torch.bincount(seq[0, prompt_len:], minlength=logits.shape[-1]).float()[None]
    return process(logits.float()[None], seq, counts, cfg)[0]


def _roll_back_draft(cache, proposals: list[int], kept: int, token: int) -> list[int]:
    """The draft cache holds the pending tokens and proposals[:-1]; keep what was accepted and return what it
    still lacks."""
    fed = len(proposals) - 1
    if kept <= fed:
        cache.evict(fed - kept)
        return [token]
    return [proposals[-1], token]  # every proposal kept: the last one was never fed to the draft


def _trim(new: list[int], cfg: GenerationConfig, eos: set[int]) -> list[int]:
    """Cut at the first eos (kept) and at max_new_tokens: a round may emit up to k + 1 tokens at once."""
    for i, token in enumerate(new):
        if token in eos:
            return new[: i + 1][: cfg.max_new_tokens]
    return new[: cfg.max_new_tokens]
