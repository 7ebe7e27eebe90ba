"""``generate_seq2seq``: decoding an encoder-decoder (:class:`specs.Seq2SeqLM`, T5/BART style) with its cache.

The source is encoded once; the decoder starts every row from ``decoder_start_token_id`` and takes one token
per step through the model's cache, which holds the cross-attention memory after the first step. A batch of
sources of different lengths comes right-padded with an ``attention_mask`` (1 = token, 0 = padding), as Hugging
Face takes it for encoder-decoders. Greedy or sampled, with the logits processing of :func:`serve.generate`; a
row that emits an end-of-sequence token is finished and its later columns hold ``cfg.fill_id``.
"""

from __future__ import annotations

import torch

from serve.processing import pick, process
from specs.generation_config import GenerationConfig
from specs.protocols import Seq2SeqLM


@torch.no_grad()
def generate_seq2seq(
    model: Seq2SeqLM,
    input_ids: torch.Tensor,
    cfg: GenerationConfig,
    *,
    decoder_start_token_id: int,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """``(B, 1 + new)`` decoder sequences: the start token and what follows it, ``new <= cfg.max_new_tokens``
    (decoding ends when every row is finished). Beam search, ``n > 1`` and stop strings are not supported here
    (refused)."""
    unsupported = [name for name, used in (("num_beams > 1", cfg.num_beams > 1), ("n > 1", cfg.n > 1),
                                           ("stop strings", bool(cfg.stop))) if used]
    if unsupported:
        raise ValueError(f"generate_seq2seq does not support {', '.join(unsupported)}; use greedy or sampling")
    total = 1 + cfg.max_new_tokens
    if total > model.config.max_seq_len:
        raise ValueError(
            f"max_new_tokens {cfg.max_new_tokens} plus the start token is {total} positions, over the model's "
            f"context of {model.config.max_seq_len}; ask for fewer tokens"
        )
    rows, device = input_ids.shape[0], input_ids.device
    padding = None if attention_mask is None else attention_mask == 0  # Hugging Face's 1 = token -> True = padding
    memory = model.encode(input_ids, key_padding_mask=padding)
    cache = model.new_cache(rows, total)
    generator = torch.Generator(device=device).manual_seed(cfg.seed) if cfg.do_sample and cfg.seed is not None else None
    eos = torch.tensor(cfg.eos_token_ids, dtype=torch.long, device=device)
    counts = torch.zeros(rows, model.config.vocab_size, device=device)
    finished = torch.zeros(rows, dtype=torch.bool, device=device)
    sequences = torch.full((rows, 1), decoder_start_token_id, dtype=torch.long, device=device)
    for _ in range(cfg.max_new_tokens):
        logits = model.decode(sequences[:, -1:], memory, memory_padding_mask=padding, cache=cache)[:, -1]
        token = torch.where(finished, cfg.fill_id, pick(process(logits.float(), sequences, counts, cfg), cfg, generator))
        sequences = torch.cat([sequences, token[:, None]], dim=1)
        counts.scatter_add_(1, token[:, None], (~finished).to(counts.dtype)[:, None])
        finished |= torch.isin(token, eos)
        if bool(finished.all()):
            break
    return sequences
