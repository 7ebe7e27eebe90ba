"""``serve.generate_seq2seq`` over our BART import, against transformers' ``generate`` on the same weights:
greedy, a right-padded batch of sources, token for token; eos ends rows; unsupported settings are refused."""

from __future__ import annotations

import pytest
import torch
import transformers

import model
import serve
import specs

VOCAB, START = 53, 2
TINY = dict(vocab_size=VOCAB, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
            decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=32,
            dropout=0.0, scale_embedding=True)
LENGTHS = [8, 5, 7]


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    hf = transformers.BartForConditionalGeneration(transformers.BartConfig(**TINY, attn_implementation="eager"))
    with torch.no_grad():  # weights large enough that greedy paths differ between rows and steps
        gen = torch.Generator().manual_seed(1)
        for p in hf.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.2)
    hf.eval()
    path = tmp_path_factory.mktemp("bart")
    hf.save_pretrained(path)
    return model.from_hf(path), hf


def _sources() -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(3, VOCAB, (len(LENGTHS), max(LENGTHS)), generator=torch.Generator().manual_seed(2))
    mask = (torch.arange(max(LENGTHS))[None, :] < torch.tensor(LENGTHS)[:, None]).long()
    return ids.masked_fill(mask == 0, 1), mask


def test_greedy_equals_transformers_generate(pair) -> None:
    ours, hf = pair
    ids, mask = _sources()
    out = serve.generate_seq2seq(ours, ids, specs.GenerationConfig(max_new_tokens=12), decoder_start_token_id=START,
                                 attention_mask=mask)
    reference = hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=12, do_sample=False, num_beams=1,
                            decoder_start_token_id=START, eos_token_id=None, forced_bos_token_id=None,
                            forced_eos_token_id=None, pad_token_id=1, min_length=0, no_repeat_ngram_size=0)
    assert out.shape == (3, 13)
    assert torch.equal(out, reference)
    assert len({tuple(row) for row in out[:, 1:].tolist()}) == 3  # the rows (their sources) differ


def test_eos_finishes_rows(pair) -> None:
    """A row ends at its first eos (kept) and is filled with the pad id after it; the others go on unchanged."""
    ours, _ = pair
    ids, mask = _sources()
    greedy = serve.generate_seq2seq(ours, ids, specs.GenerationConfig(max_new_tokens=8), decoder_start_token_id=START,
                                    attention_mask=mask)
    eos = int(greedy[0, 5])  # a token row 0 reaches after a few steps
    cfg = specs.GenerationConfig(max_new_tokens=8, eos_token_ids=(eos,), pad_token_id=0)
    out = serve.generate_seq2seq(ours, ids, cfg, decoder_start_token_id=START, attention_mask=mask)
    ended = 0
    for row in range(len(LENGTHS)):
        hits = (greedy[row, 1:] == eos).nonzero()
        if len(hits) == 0:
            assert torch.equal(out[row], greedy[row])
            continue
        end = int(hits[0]) + 1
        ended += 1
        assert torch.equal(out[row, : end + 1], greedy[row, : end + 1]) and (out[row, end + 1 :] == 0).all()
    assert 0 < ended < len(LENGTHS)


def test_unsupported_settings_are_refused(pair) -> None:
    ours, _ = pair
    ids, mask = _sources()
    with pytest.raises(ValueError, match="does not support num_beams > 1"):
        serve.generate_seq2seq(ours, ids, specs.GenerationConfig(num_beams=2), decoder_start_token_id=START)
    with pytest.raises(ValueError, match="over the model's context of 32"):
        serve.generate_seq2seq(ours, ids, specs.GenerationConfig(max_new_tokens=32), decoder_start_token_id=START)
