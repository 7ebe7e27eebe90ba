"""Beam search against Hugging Face ``generate(num_beams=...)`` on the same weights, token for token."""

from __future__ import annotations

import pytest
import torch
import transformers

import model
import serve
import specs
from specs import GenerationConfig


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    cfg = specs.apply_overrides(specs.load_preset("llama-tiny"), ["init_std=0.1"])
    torch.manual_seed(1)
    ours = model.build(cfg).eval()
    folder = model.to_hf(ours, tmp_path_factory.mktemp("hf") / "tiny")
    theirs = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    return ours, theirs


def _hf(theirs, ids, cfg: GenerationConfig, mask=None) -> torch.Tensor:
    with torch.no_grad():
        return theirs.generate(
            ids, attention_mask=mask, max_new_tokens=cfg.max_new_tokens, do_sample=False, num_beams=cfg.num_beams,
            length_penalty=cfg.length_penalty, early_stopping=cfg.early_stopping, repetition_penalty=cfg.repetition_penalty,
            eos_token_id=list(cfg.eos_token_ids) or None, pad_token_id=cfg.fill_id,
        )


def _eos_for(ours, ids) -> int:
    """A token the model emits a few steps in, so hypotheses end at different lengths."""
    return int(serve.generate(ours, ids, GenerationConfig(max_new_tokens=8))[0, -3])


@pytest.mark.parametrize("beams", [2, 4])
@pytest.mark.parametrize("length_penalty", [1.0, 0.0, 2.0])
@pytest.mark.parametrize("early_stopping", [False, True])
def test_beam_search_equals_hugging_face(pair, beams, length_penalty, early_stopping):
    ours, theirs = pair
    ids = torch.randint(3, 256, (1, 6), generator=torch.Generator().manual_seed(beams))
    cfg = GenerationConfig(max_new_tokens=14, num_beams=beams, length_penalty=length_penalty,
                           early_stopping=early_stopping, eos_token_ids=(_eos_for(ours, ids),), pad_token_id=1)
    got = serve.generate(ours, ids, cfg)
    assert torch.equal(got, _hf(theirs, ids, cfg))


def test_batched_left_padded_beam_search_with_repetition_penalty(pair):
    ours, theirs = pair
    gen = torch.Generator().manual_seed(9)
    ids = torch.randint(3, 256, (2, 7), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    ids[1, :3] = 0
    # pad_token_id 1, not 0: Hugging Face's beam search fills with the eos token when the pad id is 0 (it
    # tests the id for truthiness); with any other pad id both fill with it.
    cfg = GenerationConfig(max_new_tokens=10, num_beams=3, repetition_penalty=1.2,
                           eos_token_ids=(_eos_for(ours, ids[:1]),), pad_token_id=1)
    assert torch.equal(serve.generate(ours, ids, cfg, attention_mask=mask), _hf(theirs, ids, cfg, mask))


def test_one_beam_is_greedy(pair):
    ours, _ = pair
    ids = torch.randint(3, 256, (1, 5), generator=torch.Generator().manual_seed(2))
    from serve.beam import beam_search

    cfg = GenerationConfig(max_new_tokens=9)
    assert torch.equal(beam_search(ours, ids, cfg), serve.generate(ours, ids, cfg))
