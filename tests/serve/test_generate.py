"""serve.generate against Hugging Face ``generate`` on the same weights (a random llama-tiny exported with
``model.to_hf``): greedy and batched outputs token for token, the processed distributions of sampling, and
the same draws from the same random stream.

Logits of the two models agree to ~1e-6 (tests/model/test_hf_llama.py), so an argmax only differs on a near
tie; the weights are drawn with a larger init_std so the distributions are far from flat.
"""

from __future__ import annotations

import pytest
import torch
import transformers
from transformers.generation import logits_process as hf

import model
import serve
import specs
from specs import GenerationConfig


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    cfg = specs.apply_overrides(specs.load_preset("llama-tiny"), ["init_std=0.1"])
    torch.manual_seed(0)
    ours = model.build(cfg).eval()
    folder = model.to_hf(ours, tmp_path_factory.mktemp("hf") / "tiny")
    theirs = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    return ours, theirs


def _prompt(batch: int, length: int, seed: int) -> torch.Tensor:
    return torch.randint(3, 256, (batch, length), generator=torch.Generator().manual_seed(seed))


def _hf(theirs, ids, cfg: GenerationConfig, mask=None) -> torch.Tensor:
    kwargs = dict(max_new_tokens=cfg.max_new_tokens, do_sample=cfg.do_sample, repetition_penalty=cfg.repetition_penalty,
                  eos_token_id=list(cfg.eos_token_ids) or None, pad_token_id=cfg.fill_id, num_return_sequences=cfg.n)
    if cfg.do_sample:
        kwargs.update(temperature=cfg.temperature, top_k=cfg.top_k or 0, top_p=cfg.top_p or 1.0, min_p=cfg.min_p)
    with torch.no_grad():
        return theirs.generate(ids, attention_mask=mask, **kwargs)


@pytest.mark.parametrize("penalty", [1.0, 1.3])
def test_greedy_equals_hugging_face(pair, penalty):
    ours, theirs = pair
    cfg = GenerationConfig(max_new_tokens=24, repetition_penalty=penalty)
    for seed in range(3):
        ids = _prompt(1, 7, seed)
        assert torch.equal(serve.generate(ours, ids, cfg), _hf(theirs, ids, cfg))


def test_left_padded_batch_with_eos_equals_hugging_face_and_each_row_alone(pair):
    ours, theirs = pair
    lengths = [9, 4, 6]
    rows = [_prompt(1, n, 10 + i)[0] for i, n in enumerate(lengths)]
    width = max(lengths)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(rows):
        ids[i, width - len(row):] = row
        mask[i, width - len(row):] = 1
    alone = [serve.generate(ours, row[None], GenerationConfig(max_new_tokens=16))[0, len(row):] for row in rows]
    eos = int(alone[1][5])  # a token row 1 emits at step 6: it must finish there and pad after
    cfg = GenerationConfig(max_new_tokens=16, eos_token_ids=(eos,), pad_token_id=0)
    got = serve.generate(ours, ids, cfg, attention_mask=mask)
    assert torch.equal(got, _hf(theirs, ids, cfg, mask))
    new = got[:, width:]
    assert new[1, 5] == eos and (new[1, 6:] == 0).all()  # finished rows stop growing
    for i, row_new in enumerate(alone):  # padding never leaks into attention
        stop = (row_new == eos).nonzero()
        end = int(stop[0]) + 1 if len(stop) else len(row_new)
        assert torch.equal(new[i, :end], row_new[:end])


def test_processed_distributions_equal_hugging_faces():
    gen = torch.Generator().manual_seed(0)
    scores = torch.randn(4, 50, generator=gen) * 3
    sequences = torch.randint(0, 50, (4, 12), generator=gen)
    for settings in [
        dict(temperature=0.7),
        dict(temperature=1.3, top_k=5),
        dict(top_p=0.8),
        dict(min_p=0.1, temperature=0.5),
        dict(repetition_penalty=1.5, temperature=0.9, top_k=20, top_p=0.9, min_p=0.05),
    ]:
        cfg = GenerationConfig(do_sample=True, **settings)
        processors = hf.LogitsProcessorList()
        if cfg.repetition_penalty != 1.0:
            processors.append(hf.RepetitionPenaltyLogitsProcessor(cfg.repetition_penalty))
        if cfg.temperature != 1.0:
            processors.append(hf.TemperatureLogitsWarper(cfg.temperature))
        if cfg.top_k:
            processors.append(hf.TopKLogitsWarper(cfg.top_k))
        if cfg.top_p:
            processors.append(hf.TopPLogitsWarper(cfg.top_p))
        if cfg.min_p:
            processors.append(hf.MinPLogitsWarper(cfg.min_p))
        want = processors(sequences, scores.clone())
        got = serve.process(scores, sequences, torch.zeros(4, 50), cfg)
        torch.testing.assert_close(got.softmax(-1), want.softmax(-1), atol=1e-7, rtol=0, msg=str(settings))


def test_sampling_draws_what_hugging_face_draws_from_the_same_random_stream(pair):
    ours, theirs = pair
    cfg = GenerationConfig(max_new_tokens=20, do_sample=True, temperature=0.9, top_k=40, top_p=0.95)
    ids = _prompt(2, 5, 3)
    for seed in range(3):
        torch.manual_seed(seed)
        got = serve.generate(ours, ids, cfg)
        torch.manual_seed(seed)
        assert torch.equal(got, _hf(theirs, ids, cfg)), seed


def test_a_seed_makes_a_request_reproducible_whatever_else_draws(pair):
    ours, _ = pair
    cfg = GenerationConfig(max_new_tokens=12, do_sample=True, seed=123, n=3)
    ids = _prompt(1, 4, 0)
    first = serve.generate(ours, ids, cfg)
    torch.rand(100)  # someone else uses the global generator in between
    assert torch.equal(serve.generate(ours, ids, cfg), first)
    assert first.shape == (3, 16) and not torch.equal(first[0], first[1])  # n answers, drawn independently


def test_frequency_and_presence_penalties_count_generated_tokens_only():
    scores = torch.zeros(1, 6)
    counts = torch.tensor([[0.0, 1, 3, 0, 0, 0]])
    cfg = GenerationConfig(frequency_penalty=0.5, presence_penalty=0.25)
    got = serve.process(scores, torch.tensor([[4, 5]]), counts, cfg)  # 4 and 5 were prompt tokens: no effect
    assert got.tolist() == [[0.0, -0.75, -1.75, 0.0, 0.0, 0.0]]


class _Chars:
    """A tokenizer over single characters (ids are byte values), enough to test stop strings."""

    def decode(self, ids: list[int]) -> str:
        return "".join(chr(i) for i in ids)


def test_stop_strings_end_a_row_and_streaming_yields_the_same_tokens(pair):
    ours, _ = pair
    ids = _prompt(1, 5, 7)
    plain = serve.generate(ours, ids, GenerationConfig(max_new_tokens=20))[0, 5:].tolist()
    stop = chr(plain[3]) + chr(plain[4])  # spans two tokens: seen only once the second arrives
    cfg = GenerationConfig(max_new_tokens=20, stop=(stop,))
    got = serve.generate(ours, ids, cfg, tokenizer=_Chars())
    assert got[0, 5:].tolist() == plain[:5]
    streamed = [int(t) for t in serve.stream(ours, ids, cfg, tokenizer=_Chars())]
    assert streamed == plain[:5]
    with pytest.raises(ValueError, match="stop strings need a tokenizer"):
        serve.generate(ours, ids, cfg)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m: serve.generate(m, torch.zeros(1, 120, dtype=torch.long), GenerationConfig(max_new_tokens=20)),
         "a prompt of 120 tokens plus max_new_tokens 20 is 140 positions, over the model's context of 128"),
        (lambda m: serve.generate(m, torch.ones(2, 3, dtype=torch.long), GenerationConfig(),
                                  attention_mask=torch.tensor([[1, 1, 0], [1, 1, 1]])), "left padding"),
        (lambda m: serve.generate(m, torch.ones(3, dtype=torch.long), GenerationConfig()), "must be (B, T)"),
    ],
)
def test_bad_requests_are_refused_clearly(pair, call, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call(pair[0])
