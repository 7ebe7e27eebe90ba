"""One tiny model for the eval tests, in both forms: our checkpoint (with its tokenizer) and the same weights
exported with ``model.to_hf`` (with the same tokenizer files), which ``transformers`` and lm-eval's ``hf``
backend load. The tokenizer is a small byte-level BPE trained on a slice of WikiText-2, so words, spaces and
merges are exercised; llama-tiny has its vocabulary of 300 (ids above the tokenizer's are never targets but
still count in the softmax, on both sides). ``init_std=0.1`` spreads the logits, so choices and greedy tokens are far from ties.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import data
import model
import specs
from eval.corpora import WIKITEXT2_TEST


@dataclass(frozen=True)
class TinyPair:
    checkpoint: Path
    hf: Path
    lm: torch.nn.Module
    tokenizer: data.Tokenizer


@pytest.fixture(scope="session")
def tiny_pair(tmp_path_factory: pytest.TempPathFactory) -> TinyPair:
    root = tmp_path_factory.mktemp("tiny-pair")
    text = WIKITEXT2_TEST.read_text(encoding="utf-8")[:100_000]
    tokenizer = data.train_bpe([text], 300, eos_token="<|endoftext|>")
    cfg = specs.apply_overrides(specs.load_preset("llama-tiny"), ["init_std=0.1", "vocab_size=300"])
    torch.manual_seed(0)
    lm = model.build(cfg).eval()
    checkpoint = model.save_checkpoint(lm, root / "ckpt", extra=lambda folder: tokenizer.save(folder))
    hf = model.to_hf(lm, root / "hf")
    tokenizer.save(hf)
    return TinyPair(checkpoint=checkpoint, hf=hf, lm=lm, tokenizer=tokenizer)
