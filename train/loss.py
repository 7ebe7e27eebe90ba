"""The language-model loss from a batch: cross-entropy over labelled tokens plus the model's auxiliary losses.

Small vocabularies take the plain path (logits, then ``F.cross_entropy``). When ``B x T x V`` float32 logits
would be large, the loss is taken chunk by chunk from the final hidden states through the model's output head,
each chunk recomputed in the backward (``torch.utils.checkpoint``), so the full logits never exist at once.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from specs.batch import IGNORE_INDEX, Batch
from specs.protocols import CausalLM, LMOutput

# Above this many logits (B * T * V) the loss is chunked: 2**26 float32 logits is 256 MiB, and the backward
# holds as much again.
CHUNK_ABOVE = 1 << 26
CHUNK_TOKENS = 4096


def lm_loss(model: CausalLM, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``(loss, parts)``: the mean cross-entropy of ``batch.labels`` (``-100`` ignored) plus the sum of the
    auxiliary losses; ``parts`` holds ``"ce"``, each auxiliary loss by name and the model's metrics of the
    forward (``LMOutput.metrics``), all detached, for logging."""
    if batch.labels is None:
        raise ValueError("the batch has no labels to train on")
    vocab = model.config.vocab_size
    chunked = batch.input_ids.numel() * vocab > CHUNK_ABOVE
    out: LMOutput = model(
        batch.input_ids,
        positions=batch.positions,
        attn_mask=_allow_mask(batch),
        output="hidden" if chunked else "all",
    )
    labels = batch.labels.reshape(-1)
    if chunked:
        ce = chunked_cross_entropy(model.output_head(), out.hidden.reshape(-1, out.hidden.shape[-1]), labels)
    else:
        assert out.logits is not None  # output="all" always carries them
        ce = F.cross_entropy(out.logits.reshape(-1, vocab).float(), labels, ignore_index=IGNORE_INDEX)
    loss = ce + sum(out.aux_losses.values(), torch.zeros((), device=ce.device))
    return loss, {"ce": ce.detach(), **{k: v.detach() for k, v in out.aux_losses.items()}, **out.metrics}


def chunked_cross_entropy(
    head: torch.nn.Module, hidden: torch.Tensor, labels: torch.Tensor, chunk: int = CHUNK_TOKENS
) -> torch.Tensor:
    """Mean cross-entropy of ``head(hidden)`` against ``labels`` over the non-ignored tokens, ``chunk`` tokens at
    a time; each chunk's logits are recomputed in the backward instead of kept."""
    counted = (labels != IGNORE_INDEX).sum()
    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, hidden.shape[0], chunk):
        total = total + checkpoint(
            _summed_ce, head, hidden[start : start + chunk], labels[start : start + chunk], use_reentrant=False
        )
    return total / counted.clamp(min=1)


def _summed_ce(head: torch.nn.Module, hidden: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(head(hidden).float(), labels, ignore_index=IGNORE_INDEX, reduction="sum")


def _allow_mask(batch: Batch) -> torch.Tensor | None:
    """Packed sequences attend within their document; padding is never attended to. ``None``: plain causal."""
    mask = None
    if batch.document_ids is not None:
        docs = batch.document_ids
        mask = (docs[:, None, :, None] == docs[:, None, None, :])
    if batch.key_padding_mask is not None:
        keys = ~batch.key_padding_mask[:, None, None, :]
        mask = keys if mask is None else mask & keys
    return mask
