"""Beam search, with Hugging Face ``generate``'s semantics so that outputs agree token for token.

Per prompt, ``K = num_beams`` running beams. Each step scores every continuation of every beam by its summed
log-probability (after the logits processing), keeps the best ``max(2, 1 + #eos) * K`` candidates (enough to
leave ``K`` running ones when some end), and:

* candidates that end (an eos token, or the last allowed position) and rank among the top ``K`` become finished
  hypotheses, scored ``sum_logprobs / generated_length ** length_penalty``; the best ``K`` finished are kept;
* the best ``K`` candidates that did not end keep running; the KV cache rows follow them (``cache.reorder``).

It stops when no running beam can still beat the worst kept hypothesis (judged at the current length, as
Hugging Face does by default), when every prompt has ``K`` hypotheses and ``early_stopping`` is set, or when
the length runs out. The answer per prompt is the best hypothesis.
"""

from __future__ import annotations

import torch

from serve.processing import process
from serve.prompts import allow_mask, prefill, prompt_mask
from specs.generation_config import GenerationConfig
from specs.protocols import CausalLM

_NEVER = -1.0e9  # a score no real log-probability reaches


@torch.no_grad()
def beam_search(
    model: CausalLM, input_ids: torch.Tensor, cfg: GenerationConfig, *, attention_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """``(B, T + new)``: each prompt and its best hypothesis, filled with ``cfg.fill_id`` after its end."""
    batch, prompt_len = input_ids.shape
    k, vocab = cfg.num_beams, model.config.vocab_size
    mask = prompt_mask(input_ids, attention_mask).repeat_interleave(k, dim=0)
    max_len = prompt_len + cfg.max_new_tokens
    if max_len > model.config.max_seq_len:
        raise ValueError(f"a prompt of {prompt_len} tokens plus max_new_tokens {cfg.max_new_tokens} exceeds the "
                         f"model's context of {model.config.max_seq_len}")
    device = input_ids.device
    eos = torch.tensor(cfg.eos_token_ids, dtype=torch.long, device=device)
    keep = max(2, 1 + len(cfg.eos_token_ids)) * k
    in_top_k = torch.arange(keep, device=device) < k

    running = torch.full((batch, k, max_len), cfg.fill_id, dtype=torch.long, device=device)
    running[:, :, :prompt_len] = input_ids[:, None]
    running_scores = torch.zeros(batch, k, device=device)
    running_scores[:, 1:] = _NEVER  # all beams start equal: only the first may expand at the first step
    done = running.clone()
    done_scores = torch.full((batch, k), _NEVER, device=device)
    done_lengths = torch.zeros(batch, k, dtype=torch.long, device=device)
    is_done = torch.zeros(batch, k, dtype=torch.bool, device=device)
    improvable = torch.ones(batch, 1, dtype=torch.bool, device=device)

    padded = not bool(mask.all())
    keys = mask.bool()
    positions = (mask.cumsum(dim=-1) - 1).clamp(min=0)
    cache = model.new_cache(batch * k, max_len)
    logits = prefill(model, running[:, :, :prompt_len].flatten(0, 1), cache, positions,
                     allow_mask(keys) if padded else None)
    position = positions[:, -1:]
    offsets = torch.arange(batch, device=device)[:, None] * k
    for cur in range(prompt_len, max_len):
        log_probs = torch.log_softmax(logits.float(), dim=-1)
        counts = torch.zeros_like(log_probs)  # frequency/presence penalties would need per-beam counts
        log_probs = process(log_probs, running[:, :, :cur].flatten(0, 1), counts, cfg)
        totals = (log_probs.view(batch, k, vocab) + running_scores[:, :, None]).view(batch, k * vocab)
        cand_scores, flat = totals.topk(keep, dim=-1)
        source, token = flat // vocab, flat % vocab
        candidates = running.gather(1, source[:, :, None].expand(-1, -1, max_len)).clone()
        candidates[:, :, cur] = token
        ends = torch.isin(token, eos) | (cur + 1 >= max_len)

        # The best K candidates that go on keep running.
        go_on = (cand_scores + ends.float() * _NEVER).topk(k, dim=-1).indices
        running = candidates.gather(1, go_on[:, :, None].expand(-1, -1, max_len))
        running_scores = (cand_scores + ends.float() * _NEVER).gather(1, go_on)

        # Candidates that end among the top K join the finished hypotheses when they beat the kept ones.
        length = cur + 1 - prompt_len
        scored = cand_scores / (length ** cfg.length_penalty)
        full = is_done.all(dim=-1, keepdim=True) & cfg.early_stopping
        blocked = ~(ends & in_top_k) | full | ~improvable
        scored = scored + blocked.float() * _NEVER
        merged_scores = torch.cat([done_scores, scored], dim=1)
        best = merged_scores.topk(k, dim=-1).indices
        done = torch.cat([done, candidates], dim=1).gather(1, best[:, :, None].expand(-1, -1, max_len))
        done_scores = merged_scores.gather(1, best)
        done_lengths = torch.cat([done_lengths, torch.full_like(scored, length, dtype=torch.long)], dim=1).gather(1, best)
        is_done = torch.cat([is_done, ends & in_top_k & ~blocked], dim=1).gather(1, best)

        # Cache rows follow the beams that run on.
        cache.reorder((source.gather(1, go_on) + offsets).flatten())
        improvable &= _can_improve(running_scores, done_scores, is_done, length, cfg.length_penalty)
        all_full = bool(is_done.all() & cfg.early_stopping)
        if not bool(improvable.any()) or all_full or bool(ends.all()) or cur + 1 >= max_len:
            break
        keys = torch.cat([keys, keys.new_ones(batch * k, 1)], dim=1)
        position = position + 1
        logits = model(running[:, :, cur].reshape(-1, 1), cache=cache, positions=position,
                       attn_mask=allow_mask(keys) if padded else None)[:, -1]

    generated = int(done_lengths[:, 0].max())
    return done[:, 0, : prompt_len + generated]


def _can_improve(running_scores: torch.Tensor, done_scores: torch.Tensor, is_done: torch.Tensor, length: int,
                 length_penalty: float) -> torch.Tensor:
    """Whether the best running beam, judged at the current length, could still beat the worst kept hypothesis."""
    best_possible = running_scores[:, :1] / (length ** length_penalty)
    worst_kept = torch.where(is_done, done_scores.min(dim=1, keepdim=True).values, torch.full_like(done_scores, _NEVER))
    return (best_possible > worst_kept).any(dim=-1, keepdim=True)
