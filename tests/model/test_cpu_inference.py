"""enable_measured_cpu_linears: same numbers as F.linear whichever path wins, one measurement per shape bucket,
and nothing else about the model changes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import model
import specs
from model import cpu_inference
from model.cpu_inference import F_LINEAR, ONEDNN, LinearBucket, _MeasuredForward, enable_measured_cpu_linears


@pytest.fixture(autouse=True)
def _fresh_choices():
    cpu_inference.clear_linear_choices()
    yield
    cpu_inference.clear_linear_choices()


class FakeTimer:
    """Replaces the timer: records each bucket it is asked about and declares ``winner(bucket)`` faster."""

    def __init__(self, winner):
        self.winner = winner
        self.buckets: list[LinearBucket] = []

    def __call__(self, candidates, bucket):
        self.buckets.append(bucket)
        for fn in candidates.values():
            fn()  # both paths must run on the real input
        return {name: (1.0 if name == self.winner(bucket) else 2.0) for name in candidates}


@pytest.fixture
def force(monkeypatch):
    def install(winner) -> FakeTimer:
        timer = FakeTimer(winner if callable(winner) else lambda bucket: winner)
        monkeypatch.setattr(cpu_inference, "time_candidates", timer)
        return timer

    return install


@pytest.fixture
def onednn_calls(monkeypatch):
    calls: list[tuple[int, ...]] = []
    real = cpu_inference._onednn_linear

    def spy(x, weight, bias):
        calls.append(tuple(x.shape))
        return real(x, weight, bias)

    monkeypatch.setattr(cpu_inference, "_onednn_linear", spy)
    return calls


def _pair(*overrides: str):
    cfg = specs.apply_overrides(specs.load_preset("llama-tiny"), list(overrides))
    torch.manual_seed(0)
    plain = model.build(cfg).eval()
    fast = model.build(cfg).eval()
    fast.load_state_dict(plain.state_dict())
    return plain, enable_measured_cpu_linears(fast)


def _ids(n_vocab: int, batch: int = 2, length: int = 24) -> torch.Tensor:
    return torch.randint(0, n_vocab, (batch, length), generator=torch.Generator().manual_seed(1))


def _linear(bias: bool = True) -> torch.nn.Linear:
    torch.manual_seed(0)
    return enable_measured_cpu_linears(torch.nn.Linear(64, 48, bias=bias).eval())


def test_this_torch_build_has_onednn():
    # The path is optional at run time, but the suite runs on a CPU build that has it: a broken install fails here.
    assert torch.backends.mkldnn.is_available()
    assert cpu_inference.onednn_available()


@pytest.mark.parametrize("winner", [None, ONEDNN, F_LINEAR])
@pytest.mark.parametrize("overrides", [(), ("d_model=256", "mlp.hidden=704", "attention.bias=true")])
def test_logits_match_the_plain_model(overrides, winner, force):
    if winner is not None:
        force(winner)  # otherwise this machine's own measurement decides
    plain, fast = _pair(*overrides)
    ids = _ids(plain.config.vocab_size)
    with torch.inference_mode():
        want, got = plain(ids), fast(ids)
    assert cpu_inference.linear_choices()
    # Both are float32 GEMMs over K <= 704 terms; only the summation order differs (observed <= 3e-6).
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    if winner == F_LINEAR:
        assert torch.equal(got, want)  # the very same F.linear calls


def test_forced_winners_take_their_path(force, onednn_calls):
    lin = _linear()
    x = torch.randn(3, 64)
    want = F.linear(x, lin.weight, lin.bias)
    force(ONEDNN)
    with torch.no_grad():
        got = lin(x)
        n_timed = len(onednn_calls)  # the measurement itself ran oneDNN once
        torch.testing.assert_close(lin(x), want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert len(onednn_calls) == n_timed + 1
    assert cpu_inference.linear_choices()[cpu_inference.linear_bucket(x, lin)].path == ONEDNN

    cpu_inference.clear_linear_choices()
    force(F_LINEAR)
    with torch.no_grad():
        lin(x)
        n_timed = len(onednn_calls)
        assert torch.equal(lin(x), want)
    assert len(onednn_calls) == n_timed


def test_prefill_and_decode_are_decided_separately(force, onednn_calls):
    timer = force(lambda bucket: ONEDNN if bucket.rows > 1 else F_LINEAR)
    plain, fast = _pair()
    ids = _ids(plain.config.vocab_size, batch=1, length=16)
    with torch.inference_mode():
        caches = plain.new_cache(1, 32), fast.new_cache(1, 32)
        torch.testing.assert_close(fast(ids, cache=caches[1]), plain(ids, cache=caches[0]), atol=1e-5, rtol=1e-5)
        step = ids[:, -1:]
        for i in range(4):
            if i == 1:
                after_first_step = len(onednn_calls)  # the first step measured both paths
            want, got = plain(step, cache=caches[0]), fast(step, cache=caches[1])
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)  # the cache was filled through oneDNN
            step = want[:, -1:].argmax(-1)
    assert len(onednn_calls) == after_first_step  # decode took F.linear everywhere
    choices = cpu_inference.linear_choices()
    assert {(b.rows, c.path) for b, c in choices.items()} == {(16, ONEDNN), (1, F_LINEAR)}
    assert sorted(timer.buckets) == sorted(choices)  # one measurement per bucket, prefill and decode apart


def test_each_bucket_is_timed_once_and_shared_by_linears_of_one_shape(force):
    timer = force(F_LINEAR)
    plain, fast = _pair()
    ids = _ids(plain.config.vocab_size)
    with torch.inference_mode():
        fast(ids)
        first = list(timer.buckets)
        fast(ids)
        fast(_ids(plain.config.vocab_size, length=20))  # 40 rows: the same bucket (64) as 48
    assert timer.buckets == first
    assert len(first) == len(set(first))
    shapes = {(m.in_features, m.out_features, m.bias is not None) for m in fast.modules() if isinstance(m, torch.nn.Linear)}
    n_linears = sum(isinstance(m, torch.nn.Linear) for m in fast.modules())
    assert len(first) == len(shapes) < n_linears
    assert {b.rows for b in first} == {64}


def test_a_choice_is_not_used_outside_its_bucket(force, onednn_calls):
    timer = force(lambda bucket: ONEDNN if bucket.rows <= 4 else F_LINEAR)
    lin = _linear()
    with torch.no_grad():
        lin(torch.randn(3, 64))  # bucket 4: measured, oneDNN
        assert len(timer.buckets) == 1
        n = len(onednn_calls)
        lin(torch.randn(2, 2, 64))  # 4 rows: same bucket, no timing, oneDNN
        assert len(timer.buckets) == 1 and len(onednn_calls) == n + 1
        x = torch.randn(5, 64)
        got = lin(x)  # bucket 8: measured anew, F.linear
        assert [b.rows for b in timer.buckets] == [4, 8]
        n = len(onednn_calls)
        assert torch.equal(lin(x), F.linear(x, lin.weight, lin.bias)) and len(onednn_calls) == n
        assert torch.equal(got, F.linear(x, lin.weight, lin.bias))
        unbiased = _linear(bias=False)
        unbiased(torch.randn(3, 64))  # same rows and features, no bias: another bucket
    assert len(timer.buckets) == 3 and timer.buckets[-1].bias is False


def test_timing_leaves_the_rng_alone():
    lin = _linear()
    torch.manual_seed(123)
    state = torch.get_rng_state()
    with torch.no_grad():
        lin(torch.ones(7, 64))  # really measured on this machine
    assert cpu_inference.linear_choices()
    assert torch.equal(torch.get_rng_state(), state)


def test_clearing_the_choices_measures_again(force):
    timer = force(F_LINEAR)
    lin = _linear()
    with torch.no_grad():
        lin(torch.randn(2, 64))
        cpu_inference.clear_linear_choices()
        assert cpu_inference.linear_choices() == {}
        lin(torch.randn(2, 64))
    assert len(timer.buckets) == 2


def test_losing_onednn_keeps_no_weight_copy(force):
    force(F_LINEAR)
    lin = _linear()
    with torch.no_grad():
        lin(torch.randn(2, 64))
    assert lin.forward._packed is None


def test_no_timing_while_compiling_or_without_onednn(force, onednn_calls, monkeypatch):
    timer = force(ONEDNN)
    lin = _linear()
    x = torch.randn(3, 64)
    want = F.linear(x, lin.weight, lin.bias)
    with torch.no_grad():
        with monkeypatch.context() as patch:
            patch.setattr(torch.compiler, "is_compiling", lambda: True)
            assert torch.equal(lin(x), want)
        with monkeypatch.context() as patch:
            patch.setattr(cpu_inference, "onednn_available", lambda: False)
            assert torch.equal(lin(x), want)
    assert timer.buckets == [] and onednn_calls == [] and cpu_inference.linear_choices() == {}


def test_every_linear_is_routed_and_state_dict_is_untouched():
    plain, fast = _pair()
    linears = [m for m in fast.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all(isinstance(m.forward, _MeasuredForward) for m in linears)
    assert fast.state_dict().keys() == plain.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(fast.state_dict().values(), plain.state_dict().values()))
    wrappers = [m.forward for m in linears]
    assert enable_measured_cpu_linears(fast) is fast
    assert [m.forward for m in linears] == wrappers  # applying twice keeps the first wrappers (and their packs)


def test_training_takes_the_autograd_path_with_identical_gradients(force):
    timer = force(ONEDNN)
    plain, fast = _pair()
    ids = _ids(plain.config.vocab_size)
    for m in (plain, fast):
        m.train()
        m(ids).logsumexp(-1).mean().backward()
    for (name, a), (_, b) in zip(plain.named_parameters(), fast.named_parameters()):
        assert torch.equal(a.grad, b.grad), name
    assert timer.buckets == []


@pytest.mark.parametrize("winner", [ONEDNN, F_LINEAR])
def test_in_place_weight_updates_are_seen(winner, force):
    force(winner)
    plain, fast = _pair()
    ids = _ids(plain.config.vocab_size)
    with torch.inference_mode():
        fast(ids)  # decides, and packs the weights where oneDNN wins
    with torch.no_grad():
        for m in (plain, fast):
            m.lm_head.weight.mul_(-0.5)
            m.layers[0].attn.wq.weight.add_(0.1)
    with torch.inference_mode():
        torch.testing.assert_close(fast(ids), plain(ids), atol=1e-5, rtol=1e-5)


def test_other_dtypes_use_the_ordinary_path(force):
    timer = force(ONEDNN)
    plain, fast = _pair()
    plain, fast = plain.to(torch.bfloat16), fast.to(torch.bfloat16)
    ids = _ids(plain.config.vocab_size)
    with torch.inference_mode():
        assert torch.equal(fast(ids), plain(ids))  # same F.linear calls, bit for bit
    assert timer.buckets == []


def test_a_model_built_under_inference_mode_works(force):
    force(ONEDNN)
    cfg = specs.load_preset("llama-tiny")
    with torch.inference_mode():
        torch.manual_seed(0)
        plain = model.build(cfg).eval()
        torch.manual_seed(0)
        fast = enable_measured_cpu_linears(model.build(cfg).eval())
        ids = _ids(cfg.vocab_size)
        torch.testing.assert_close(fast(ids), plain(ids), atol=1e-5, rtol=1e-5)


def test_the_timer_alternates_the_candidates_and_returns_medians():
    order: list[str] = []
    seconds = cpu_inference.time_candidates(
        {"a": lambda: order.append("a"), "b": lambda: order.append("b")}, LinearBucket(1, 2, 3, False, 1)
    )
    assert set(seconds) == {"a", "b"} and all(s >= 0 for s in seconds.values())
    runs = len(order) // 2 - cpu_inference.WARMUP
    assert cpu_inference.REPEATS <= runs <= cpu_inference.MAX_REPEATS  # trivial calls: more rounds, up to the cap
    assert order[2 * cpu_inference.WARMUP :] == ["a", "b"] * runs
