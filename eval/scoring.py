"""Log-probabilities of the last tokens of token sequences, in one batched forward.

Perplexity and the harness's loglikelihood requests ask the same question: given ``tokens``, how likely are
its last ``n`` tokens, each predicted from everything before it? The rows of a batch are padded on the right,
which changes nothing for a causal model (a position never sees the ones after it), so no mask is needed.
Only the positions that predict a scored token go through the output head, and in chunks, so the ``(B, T, V)``
logits are never held at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from specs.protocols import CausalLM, LMOutput

# Rows of hidden states sent through the output head at once: with a 50k vocabulary, 1024 rows of float32
# logits are 200 MB.
HEAD_CHUNK = 1024


@dataclass(frozen=True, slots=True)
class Scored:
    """The sum of the natural-log probabilities of a row's scored tokens, and whether greedy decoding (the most
    likely token at each position) would have produced every one of them."""

    logprob: float
    greedy: bool


@torch.no_grad()
def score_last_tokens(
    lm: CausalLM, rows: Sequence[Sequence[int]], scored: Sequence[int], *, device: torch.device | str | None = None
) -> list[Scored]:
    """For each ``rows[i]``, score its last ``scored[i]`` tokens (each from all the tokens before it in the row).

    The model reads ``rows[i][:-1]``; a row needs at least one token before its scored ones.
    """
    if len(rows) != len(scored):
        raise ValueError(f"{len(rows)} rows but {len(scored)} scored counts")
    for i, (row, n) in enumerate(zip(rows, scored)):
        if not 0 < n < len(row):
            raise ValueError(f"row {i}: cannot score {n} of its {len(row)} tokens (at least one token of context)")
    if device is None:
        device = next(iter(lm.parameters())).device  # type: ignore[attr-defined]
    width = max(len(row) - 1 for row in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row) - 1] = torch.as_tensor(row[:-1], dtype=torch.long)
    out = lm(ids.to(device), output="hidden")
    assert isinstance(out, LMOutput)
    # The hidden state at position p predicts token p + 1: the scored tokens of row i sit at len - n .. len - 1.
    which = torch.cat([torch.full((n,), i, dtype=torch.long) for i, n in enumerate(scored)])
    where = torch.cat([torch.arange(len(row) - 1 - n, len(row) - 1) for row, n in zip(rows, scored)])
    targets = torch.cat([torch.as_tensor(row[len(row) - n :], dtype=torch.long) for row, n in zip(rows, scored)])
    logprobs, hits = _target_logprobs(lm, out.hidden[which.to(device), where.to(device)], targets.to(device))
    sums = torch.zeros(len(rows), dtype=torch.float64).index_add_(0, which, logprobs.double().cpu())
    misses = torch.zeros(len(rows), dtype=torch.long).index_add_(0, which, (~hits).long().cpu())
    return [Scored(float(s), int(m) == 0) for s, m in zip(sums, misses)]


def _target_logprobs(lm: CausalLM, hidden: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(N,)`` float32 log-probabilities of ``targets`` under the head's logits of ``hidden (N, C)``, and whether
    each target is the argmax."""
    head = lm.output_head()
    logprobs, hits = [], []
    for start in range(0, len(targets), HEAD_CHUNK):
        logits = head(hidden[start : start + HEAD_CHUNK]).float()
        wanted = targets[start : start + HEAD_CHUNK]
        logprobs.append(torch.log_softmax(logits, dim=-1).gather(1, wanted[:, None]).squeeze(1))
        hits.append(logits.argmax(dim=-1) == wanted)
    return torch.cat(logprobs), torch.cat(hits)
