"""Sentence embeddings from any :class:`specs.EncoderModel`: tokenize (special tokens added, truncated to the
model's length), run in batches of similar lengths, pool (mean of the real tokens, or the first token) and
normalise, as sentence-transformers' recipe for the model says (:func:`sentence_settings` reads it from the
model's folder).

Texts are sorted by length (longest first, as sentence-transformers does) so a batch pads little; results come
back in the input order.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import tokenizers
import torch
import torch.nn.functional as F
from tqdm import tqdm

from data.tokenizer import Tokenizer
from specs.config_io import FieldProblem
from specs.protocols import EncoderModel

Pooling = Literal["mean", "cls"]


@dataclass(frozen=True, kw_only=True, slots=True)
class EmbedderSettings:
    """``pooling``: the mean of the real tokens' states, or the first token's (BERT's ``[CLS]``). ``normalize``:
    L2-normalise (dot products are then cosine similarities). ``max_tokens``: longer texts are truncated (None:
    the model's context). ``batch_size``: texts per forward."""

    pooling: Pooling = "mean"
    normalize: bool = True
    max_tokens: int | None = None
    batch_size: int = 32

    def __post_init__(self) -> None:
        if self.max_tokens is not None and self.max_tokens < 2:
            raise FieldProblem("max_tokens", f"must be >= 2 (room for the special tokens), got {self.max_tokens}")
        if self.batch_size < 1:
            raise FieldProblem("batch_size", f"must be >= 1, got {self.batch_size}")


def sentence_settings(folder: str | os.PathLike[str], *, batch_size: int = 32) -> EmbedderSettings:
    """The recipe a sentence-transformers model folder declares: ``sentence_bert_config.json``'s
    ``max_seq_length``, ``1_Pooling/config.json``'s mode and a ``Normalize`` module in ``modules.json``; the
    defaults (mean, normalised, the model's context) for a plain encoder folder."""
    root = Path(folder)
    max_tokens = _json(root / "sentence_bert_config.json").get("max_seq_length")
    modules = _json(root / "modules.json") if (root / "modules.json").is_file() else None
    pooling: Pooling = "mean"
    normalize = True
    if isinstance(modules, list):
        types = {str(m.get("type", "")).rsplit(".", 1)[-1]: m for m in modules if isinstance(m, dict)}
        normalize = "Normalize" in types
        if "Pooling" in types:
            config = _json(root / str(types["Pooling"].get("path", "1_Pooling")) / "config.json")
            modes = [k.removeprefix("pooling_mode_") for k, on in config.items() if k.startswith("pooling_mode_") and on]
            if modes not in (["mean_tokens"], ["cls_token"]):
                raise ValueError(f"{root}: pooling {modes} is not supported (mean_tokens or cls_token)")
            pooling = "mean" if modes == ["mean_tokens"] else "cls"
    return EmbedderSettings(pooling=pooling, normalize=normalize, max_tokens=max_tokens, batch_size=batch_size)


def _json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


class Embedder:
    """A :class:`specs.TextEmbedder` over ``encoder`` and its ``tokenizer`` (whose ``tokenizer.json`` adds the
    model's special tokens, as BERT's ``[CLS] ... [SEP]``). The encoder runs where its weights are."""

    def __init__(self, encoder: EncoderModel, tokenizer: Tokenizer, settings: EmbedderSettings | None = None, *,
                 progress: bool = False) -> None:
        self.encoder = encoder
        self.settings = settings or EmbedderSettings()
        context = encoder.config.max_seq_len
        self.max_tokens = min(self.settings.max_tokens or context, context)
        self.dim = encoder.config.d_model
        self.progress = progress
        # A copy of the tokenizer that truncates: the caller's keeps encoding whole texts.
        self._backend = tokenizers.Tokenizer.from_str(tokenizer.backend.to_str())
        self._backend.no_padding()
        self._backend.enable_truncation(self.max_tokens)
        self._pad_id = tokenizer.pad_id or 0

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Each text's ids as the encoder reads them: special tokens added, truncated to ``max_tokens``."""
        return [e.ids for e in self._backend.encode_batch(list(texts), add_special_tokens=True)]

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [len(ids) for ids in self.token_ids(texts)]

    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        """``(len(texts), dim)`` float32 embeddings on the CPU."""
        rows = self.token_ids(texts)
        order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))
        out = torch.empty(len(rows), self.dim)
        size = self.settings.batch_size
        device = _device(self.encoder)
        batches = range(0, len(order), size)
        with torch.inference_mode():
            for first in tqdm(batches, desc="embedding", unit="batch", disable=not self.progress):
                picked = order[first : first + size]
                out[picked] = self._embed_batch([rows[i] for i in picked], device).cpu()
        return out

    def _embed_batch(self, rows: list[list[int]], device: torch.device) -> torch.Tensor:
        width = max(len(r) for r in rows)
        ids = torch.tensor([r + [self._pad_id] * (width - len(r)) for r in rows], device=device)
        lengths = torch.tensor([len(r) for r in rows], device=device)
        padding = torch.arange(width, device=device) >= lengths[:, None]  # True = padding (specs.Batch)
        hidden = self.encoder(ids, key_padding_mask=padding).float()
        if self.settings.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            keep = (~padding).unsqueeze(-1).float()
            pooled = (hidden * keep).sum(1) / keep.sum(1).clamp(min=1.0)
        return F.normalize(pooled, dim=-1) if self.settings.normalize else pooled


def _device(encoder: EncoderModel) -> torch.device:
    if isinstance(encoder, torch.nn.Module):
        return next(encoder.parameters()).device
    return torch.device("cpu")
