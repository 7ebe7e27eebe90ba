"""``"auto"``'s disk cache: a later process reuses a measured choice, never for a call the remembered kernel
cannot serve, and a corrupt or half-foreign file is ignored and rewritten; concurrent writers lose nothing.

A "later process" is the same process with the in-memory choices cleared (``clear_auto_choices``), which is all
a new process has. The cache file lives in ``tmp_path`` (tests/conftest.py turns the cache off elsewhere).
"""

from __future__ import annotations

import json
import threading

import pytest
import torch

import kernel
from kernel import auto_cache, registry
from kernel.caps import torch_kernel_caps
from kernel.registry import auto_choices, clear_auto_choices, register, resolve, shape_bucket
from specs.attention import AttentionCall


class Counting:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, call: AttentionCall) -> torch.Tensor:
        self.calls += 1
        return torch.zeros_like(call.q)


@pytest.fixture
def cache_file(tmp_path, monkeypatch):
    path = tmp_path / "cache" / "auto_kernels.json"
    monkeypatch.setenv(auto_cache.ENV, str(path))
    clear_auto_choices()
    yield path
    registry.unregister("counting")
    clear_auto_choices()


def make_call(**kw) -> AttentionCall:
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 8, 16, generator=gen) for _ in range(3))
    return AttentionCall(q=q, k=k, v=v, **kw)


def stored(path) -> dict[str, str]:
    data = json.loads(path.read_text())
    assert data["format"] == auto_cache.FORMAT
    return data["choices"]


def test_a_later_process_reuses_the_choice_without_timing(cache_file):
    counting = Counting()
    register("counting", counting, torch_kernel_caps())
    call = make_call(causal=True)
    first = resolve("auto", call)
    timed = counting.calls
    assert timed > 0 and len(stored(cache_file)) == 1
    name = auto_choices()[shape_bucket(call)]
    assert list(stored(cache_file).values()) == [name]

    clear_auto_choices()  # what a new process starts with
    assert resolve("auto", call) is first and counting.calls == timed, "a remembered choice is not re-measured"


def test_never_hands_out_a_remembered_kernel_that_cannot_serve_the_call(cache_file):
    call = make_call(softcap=5.0)  # sdpa has no softcap
    counting = Counting()
    register("counting", counting, torch_kernel_caps())
    capable = [n for n in kernel.available() if not kernel.explain(n, call)]
    assert "sdpa" not in capable and len(capable) > 1
    bucket = shape_bucket(call)
    # A forged (or stale) file claims sdpa won this bucket among exactly these candidates.
    cache_file.parent.mkdir(parents=True)
    key = auto_cache.choice_key(bucket, capable, call.q.device)
    cache_file.write_text(json.dumps({"format": auto_cache.FORMAT, "choices": {key: "sdpa"}}))
    chosen = resolve("auto", call)
    assert auto_choices()[bucket] in capable and chosen is not kernel.resolve("sdpa", make_call())
    assert counting.calls > 0, "the refused entry is measured afresh"
    assert stored(cache_file)[key] in capable, "and overwritten with the measured choice"


@pytest.mark.parametrize("content", ["{not json", '{"format": 99, "choices": {}}', "[1, 2]", ""])
def test_a_corrupt_file_is_ignored_and_rewritten(cache_file, content):
    cache_file.parent.mkdir(parents=True)
    cache_file.write_text(content)
    register("counting", Counting(), torch_kernel_caps())
    call = make_call()
    resolve("auto", call)
    assert list(stored(cache_file).values()) == [auto_choices()[shape_bucket(call)]]


def test_off_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv(auto_cache.ENV, "off")
    assert auto_cache.cache_path() is None
    auto_cache.remember("key", "manual")
    assert auto_cache.remembered("key") is None and not any(tmp_path.iterdir())


def test_default_location_is_the_user_cache_dir(tmp_path, monkeypatch):
    monkeypatch.delenv(auto_cache.ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert auto_cache.cache_path() == tmp_path / "lmplanes" / "auto_kernels.json"


def test_concurrent_writers_lose_no_entry_and_leave_valid_json(cache_file):
    def write(worker: int) -> None:
        for i in range(25):
            auto_cache.remember(f"w{worker}-{i}", "manual")

    threads = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(stored(cache_file)) == 100
    assert [p.name for p in cache_file.parent.iterdir() if p.suffix == ".tmp"] == []
