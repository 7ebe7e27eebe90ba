"""``generate`` and ``stream``: decoding with a KV cache, any number of rows, Hugging Face's left padding.

Rows are the prompts (each repeated ``n`` times when sampling several answers). A batch of prompts of
different lengths comes left-padded with an ``attention_mask`` (1 = token, 0 = padding), as Hugging Face
takes it: positions count real tokens only, and padded keys are masked out of every attention, so a row's
tokens are what that prompt alone would give. A row that emits an end-of-sequence token (or completes a stop
string) is finished: it keeps the token that ended it, and from then on its columns hold ``cfg.fill_id``.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Protocol

import torch

from serve.processing import pick, process
from serve.prompts import allow_mask, prefill, prompt_mask
from specs.generation_config import GenerationConfig
from specs.protocols import CausalLM


class Detokenizer(Protocol):
    """What stop strings need: ``decode(ids) -> text`` (``data.Tokenizer`` has it)."""

    def decode(self, ids: list[int]) -> str: ...


@torch.no_grad()
def generate(
    model: CausalLM,
    input_ids: torch.Tensor,
    cfg: GenerationConfig,
    *,
    attention_mask: torch.Tensor | None = None,
    tokenizer: Detokenizer | None = None,
) -> torch.Tensor:
    """``(B * n, T + new)``: the prompts and what follows them, ``new <= cfg.max_new_tokens`` (decoding ends when
    every row is finished). Beam search when ``cfg.num_beams > 1``."""
    if cfg.num_beams > 1:
        from serve.beam import beam_search

        return beam_search(model, input_ids, cfg, attention_mask=attention_mask)
    rows = _repeat(input_ids, cfg.n)
    steps = list(stream(model, input_ids, cfg, attention_mask=attention_mask, tokenizer=tokenizer))
    return torch.cat([rows, torch.stack(steps, dim=1)], dim=1) if steps else rows


@torch.no_grad()
def stream(
    model: CausalLM,
    input_ids: torch.Tensor,
    cfg: GenerationConfig,
    *,
    attention_mask: torch.Tensor | None = None,
    tokenizer: Detokenizer | None = None,
) -> Generator[torch.Tensor, None, None]:
    """Yields ``(B * n,)`` tokens, one step at a time, until every row is finished or ``max_new_tokens``; closing it
    early frees the KV cache at once."""
    if cfg.stop and tokenizer is None:
        raise ValueError("stop strings need a tokenizer to read the generated text (tokenizer=...)")
    ids = _repeat(input_ids, cfg.n)
    mask = _repeat(prompt_mask(input_ids, attention_mask), cfg.n)
    rows, prompt_len = ids.shape
    total = prompt_len + cfg.max_new_tokens
    limit = model.config.max_seq_len
    if total > limit:
        raise ValueError(
            f"a prompt of {prompt_len} tokens plus max_new_tokens {cfg.max_new_tokens} is {total} positions, over the "
            f"model's context of {limit}; shorten the prompt or ask for fewer tokens"
        )
    device = ids.device
    padded = not bool(mask.all())  # one look before decoding: no mask at all when nothing is padded
    keys = mask.bool()
    positions = (mask.cumsum(dim=-1) - 1).clamp(min=0)
    generator = torch.Generator(device=device).manual_seed(cfg.seed) if cfg.do_sample and cfg.seed is not None else None
    eos = torch.tensor(cfg.eos_token_ids, dtype=torch.long, device=device)
    # What the penalties read, kept up to date only when the config has them (a step's bookkeeping is paid once
    # per token, next to decode steps of a few ms).
    track_sequences = cfg.repetition_penalty != 1.0
    track_counts = bool(cfg.frequency_penalty or cfg.presence_penalty)
    counts = torch.zeros(rows, model.config.vocab_size if track_counts else 0, device=device)
    finished = torch.zeros(rows, dtype=torch.bool, device=device)
    sequences = ids
    produced: list[list[int]] = [[] for _ in range(rows)]

    cache = model.new_cache(rows, total)
    logits = prefill(model, ids, cache, positions, allow_mask(keys) if padded else None)
    next_position = positions[:, -1:] + 1
    for step in range(cfg.max_new_tokens):
        scores = process(logits.float(), sequences, counts, cfg)
        token = torch.where(finished, cfg.fill_id, pick(scores, cfg, generator))
        yield token
        if track_sequences:
            sequences = torch.cat([sequences, token[:, None]], dim=1)
        if track_counts:
            counts.scatter_add_(1, token[:, None], (~finished).to(counts.dtype)[:, None])
        if cfg.stop:
            assert tokenizer is not None  # checked above
            finished |= _stop_hits(token, finished, produced, cfg.stop, tokenizer)
        finished |= torch.isin(token, eos)
        if step == cfg.max_new_tokens - 1 or bool(finished.all()):
            return
        if padded:
            keys = torch.cat([keys, keys.new_ones(rows, 1)], dim=1)
        logits = model(token[:, None], cache=cache, positions=next_position,
                       attn_mask=allow_mask(keys) if padded else None)[:, -1]
        next_position = next_position + 1


def _repeat(t: torch.Tensor, n: int) -> torch.Tensor:
    return t if n == 1 else t.repeat_interleave(n, dim=0)


def _stop_hits(
    token: torch.Tensor, finished: torch.Tensor, produced: list[list[int]], stop: tuple[str, ...], tokenizer: Detokenizer
) -> torch.Tensor:
    """Rows, unfinished before ``token``, whose generated text now contains a stop string (checked on the text:
    a stop string can span tokens or end inside one)."""
    hit = torch.zeros_like(finished)
    for row, (tok, done) in enumerate(zip(token.tolist(), finished.tolist())):
        if done:
            continue
        produced[row].append(tok)
        if any(s in tokenizer.decode(produced[row]) for s in stop):
            hit[row] = True
    return hit
