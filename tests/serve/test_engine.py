"""serve.Engine: continuous batching gives every request the tokens ``serve.generate`` gives its prompt alone
(greedy, and sampling with a seed and penalties), while requests join and leave between steps, wait for cache
blocks in arrival order, are preempted and recomputed when blocks run out, are cancelled, and share the blocks
of a common prompt prefix.

The weights are drawn with a larger init_std so the distributions are far from flat: batched arithmetic differs
from one row's by float noise only, which moves an argmax only on a near tie.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

import model
import serve
import specs
from serve.engine import Engine
from serve.events import TokenEvent
from specs import GenerationConfig
from tests.serve.counting import CountingForwards

GREEDY = GenerationConfig(max_new_tokens=12)
SAMPLED = GenerationConfig(max_new_tokens=12, do_sample=True, temperature=0.9, top_k=40, top_p=0.9,
                           repetition_penalty=1.2, frequency_penalty=0.3, seed=7)


@pytest.fixture(scope="module")
def lm() -> torch.nn.Module:
    cfg = specs.apply_overrides(specs.load_preset("llama-tiny"), ["init_std=0.1"])
    torch.manual_seed(0)
    return model.build(cfg).eval()


def _prompt(length: int, seed: int) -> list[int]:
    return torch.randint(3, 256, (length,), generator=torch.Generator().manual_seed(seed)).tolist()


def _alone(lm, prompt: list[int], cfg: GenerationConfig) -> list[int]:
    """What serve.generate gives the prompt alone, cut after the token that finished it."""
    out = serve.generate(lm, torch.tensor([prompt]), cfg)[0, len(prompt) :].tolist()
    ends = [i for i, t in enumerate(out) if t in cfg.eos_token_ids]
    return out[: ends[0] + 1] if ends else out


def _drain(engine: Engine, out: dict[int, list[TokenEvent]], max_steps: int = 500) -> None:
    for _ in range(max_steps):
        if not engine.has_work:
            return
        for event in engine.step():
            out.setdefault(event.request_id, []).append(event)
    raise AssertionError(f"the engine still has work after {max_steps} steps: {engine.stats}")


def _check_finished(events: list[TokenEvent], cfg: GenerationConfig) -> list[int]:
    """The request's tokens, after checking that exactly its last event carries the right finish reason."""
    tokens = [e.token for e in events]
    assert [e.finish_reason for e in events[:-1]] == [None] * (len(events) - 1)
    assert events[-1].finish_reason == ("stop" if tokens[-1] in cfg.eos_token_ids else "length")
    return tokens


@pytest.mark.parametrize("base", [GREEDY, SAMPLED], ids=["greedy", "sampled"])
def test_staggered_requests_equal_generate_alone(lm, base: GenerationConfig) -> None:
    """Ten requests of different lengths arrive over several steps; at most four run at once."""
    engine = Engine(lm, max_batch=4, max_len=48, block_size=4)
    requests: dict[int, tuple[list[int], GenerationConfig]] = {}
    out: dict[int, list[TokenEvent]] = {}
    for i in range(10):
        prompt = _prompt(3 + 2 * i, seed=i)
        cfg = replace(base, max_new_tokens=4 + i, seed=base.seed and base.seed + i)
        if i % 2:  # every other request stops early, at the first eos: a token it gives half-way
            cfg = replace(cfg, eos_token_ids=(_alone(lm, prompt, cfg)[cfg.max_new_tokens // 2],))
        requests[engine.submit(prompt, cfg)] = (prompt, cfg)
        for _ in range(i % 3):  # arrivals between decode steps
            for event in engine.step():
                out.setdefault(event.request_id, []).append(event)
    _drain(engine, out)
    for request_id, (prompt, cfg) in requests.items():
        assert _check_finished(out[request_id], cfg) == _alone(lm, prompt, cfg), f"request {request_id}"
    assert {out[r][-1].finish_reason for r in requests} == {"stop", "length"}
    assert engine.stats.blocks_free == engine.cache.blocks_total and engine.stats.running == 0


@pytest.mark.parametrize("base", [GREEDY, SAMPLED], ids=["greedy", "sampled"])
def test_too_few_blocks_admission_waits_in_order_and_preempted_requests_recompute(lm, base) -> None:
    """Blocks for about two requests: the rest wait and are admitted in arrival order (a short request never
    overtakes a long one); decode steps that run out preempt the latest arrival, which gives the same tokens."""
    engine = Engine(lm, max_batch=4, max_len=32, block_size=4, num_blocks=9)
    lengths = [14, 3, 10, 4, 12, 2]
    requests = {engine.submit(p, replace(base, max_new_tokens=16)): p for p in (_prompt(n, 20 + n) for n in lengths)}
    out: dict[int, list[TokenEvent]] = {}
    first_token_order = []
    while engine.has_work:
        stats = engine.stats
        assert stats.blocks_used + stats.blocks_free == 9 and stats.running + stats.waiting <= len(lengths)
        for event in engine.step():
            if event.request_id not in out:
                first_token_order.append(event.request_id)
            out.setdefault(event.request_id, []).append(event)
    assert first_token_order == sorted(requests)  # FIFO admission: nobody starves
    assert engine.stats.preemptions > 0
    for request_id, prompt in requests.items():
        assert [e.token for e in out[request_id]] == _alone(lm, prompt, replace(base, max_new_tokens=16))
    assert engine.stats.blocks_free == 9


def test_cancel_frees_the_blocks_of_running_and_waiting_requests(lm) -> None:
    engine = Engine(lm, max_batch=1, max_len=40, block_size=4)
    running = engine.submit(_prompt(10, 1), replace(GREEDY, max_new_tokens=20))
    waiting = engine.submit(_prompt(5, 2), GREEDY)
    engine.step()
    engine.step()
    stats = engine.stats
    assert (stats.running, stats.waiting, stats.blocks_used) == (1, 1, 3)  # 11 tokens in blocks of 4
    engine.cancel(running)
    assert (engine.stats.running, engine.stats.blocks_used, engine.stats.cancelled) == (0, 0, 1)
    engine.cancel(waiting)
    assert not engine.has_work and engine.stats.cancelled == 2
    engine.cancel(running)  # already gone: nothing to do
    assert engine.stats.cancelled == 2
    with pytest.raises(ValueError, match="no request 2 was submitted"):
        engine.cancel(2)
    assert engine.step() == []


def test_identical_prompt_prefixes_share_blocks_and_give_the_same_tokens(lm) -> None:
    """Three requests open with the same 17 tokens (4 whole blocks of 4): the later two link those blocks."""
    common = _prompt(17, 3)
    prompts = [common, [*common, 9, 10, 11], [*common[:16], 200, 201]]
    cfg = replace(GREEDY, max_new_tokens=3)
    engine = Engine(lm, max_batch=3, max_len=32, block_size=4)
    ids = [engine.submit(p, cfg) for p in prompts]
    out: dict[int, list[TokenEvent]] = {}
    for event in engine.step():  # all three are admitted in this step
        out.setdefault(event.request_id, []).append(event)
    # Prompts of 17, 20 and 18 tokens alone would hold 5 blocks each; shared, the 4 prefix blocks are held once.
    assert engine.stats.blocks_used == 5 + 1 + 1
    _drain(engine, out)
    for request_id, prompt in zip(ids, prompts):
        assert [e.token for e in out[request_id]] == _alone(lm, prompt, cfg)
    assert engine.stats.blocks_free == engine.cache.blocks_total


def test_newcomers_are_prefilled_together_in_one_right_padded_forward(lm) -> None:
    counting = CountingForwards(lm)
    engine = Engine(counting, max_batch=4, max_len=32, block_size=4)
    prompts = [_prompt(n, 40 + n) for n in (5, 9, 3, 7)]
    ids = [engine.submit(p, GREEDY) for p in prompts]
    out: dict[int, list[TokenEvent]] = {}
    for event in engine.step():
        out.setdefault(event.request_id, []).append(event)
    assert counting.shapes == [(4, 9)] and engine.stats.running == 4
    assert engine.cache.seq_lens.tolist() == [5, 9, 3, 7]  # the padding was evicted
    assert engine.stats.blocks_used == 2 + 3 + 1 + 2
    _drain(engine, out)
    for request_id, prompt in zip(ids, prompts):
        assert [e.token for e in out[request_id]] == _alone(lm, prompt, GREEDY)


def test_a_newcomer_whose_padded_row_would_pass_max_len_is_prefilled_in_a_forward_of_its_own(lm) -> None:
    """A links 24 tokens of X's prompt and computes 4; B computes 20: padded together, A's row would hold 44 > 32."""
    counting = CountingForwards(lm)
    engine = Engine(counting, max_batch=3, max_len=32, block_size=4)
    x = _prompt(25, 50)
    prompts = {"x": x, "a": [*x[:24], 7, 8, 9, 10], "b": _prompt(20, 51)}
    cfgs = {"x": replace(GREEDY, max_new_tokens=6), "a": replace(GREEDY, max_new_tokens=4), "b": replace(GREEDY, max_new_tokens=4)}
    ids = {"x": engine.submit(prompts["x"], cfgs["x"])}
    out: dict[int, list[TokenEvent]] = {}
    for event in engine.step():
        out.setdefault(event.request_id, []).append(event)
    ids |= {name: engine.submit(prompts[name], cfgs[name]) for name in ("a", "b")}
    counting.shapes.clear()
    for event in engine.step():
        out.setdefault(event.request_id, []).append(event)
    assert counting.shapes == [(1, 1), (1, 4), (1, 20)]  # X decodes; A alone (linking X's blocks); then B
    _drain(engine, out)
    for name, request_id in ids.items():
        assert [e.token for e in out[request_id]] == _alone(lm, prompts[name], cfgs[name]), name


def test_requests_it_could_never_run_are_refused_in_one_line(lm) -> None:
    engine = Engine(lm, max_batch=2, max_len=20, block_size=4, num_blocks=4)
    with pytest.raises(ValueError, match="n=1, num_beams=1, no stop strings"):
        engine.submit([1, 2], GenerationConfig(num_beams=2))
    with pytest.raises(ValueError, match="n=1, num_beams=1, no stop strings"):
        engine.submit([1, 2], GenerationConfig(stop=("x",)))
    with pytest.raises(ValueError, match="the prompt is empty"):
        engine.submit([], GREEDY)
    with pytest.raises(ValueError, match=r"prompt token id 256 is outside the vocabulary \(ids 0..255\)"):
        engine.submit([1, 256], GREEDY)
    with pytest.raises(ValueError, match="a prompt of 10 tokens plus max_new_tokens 12 is 22 tokens, over the engine's max_len 20"):
        engine.submit(list(range(10)), GREEDY)
    with pytest.raises(ValueError, match="a request of 20 tokens needs 5 blocks of 4, more than the cache's 4"):
        engine.submit(list(range(8)), GREEDY)
    with pytest.raises(ValueError, match="max_batch must be >= 1"):
        Engine(lm, max_batch=0, max_len=20)
    assert not engine.has_work
