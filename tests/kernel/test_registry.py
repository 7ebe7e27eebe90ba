"""The kernel registry: register / resolve / explain, lazy string targets, ``"auto"`` and ``use_kernel``.

Registry state is module-global, so every test runs inside the ``clean_registry`` fixture: kernels a test
registers are unregistered afterwards and ``"auto"``'s cache is cleared before and after.
"""

from __future__ import annotations

import sys
import uuid

import pytest
import torch

import kernel
from kernel import manual, registry, sdpa
from kernel.caps import torch_kernel_caps
from kernel.registry import (
    KernelUnavailable,
    auto_choices,
    clear_auto_choices,
    explain,
    register,
    resolve,
    shape_bucket,
)
from specs.attention import AttentionCall, KernelCaps

FULL_CAPS = torch_kernel_caps()


@pytest.fixture(autouse=True)
def clean_registry():
    before = set(kernel.available())
    clear_auto_choices()
    yield
    for name in set(kernel.available()) - before:
        registry.unregister(name)
    clear_auto_choices()
    assert kernel.available()[:2] == ["manual", "sdpa"], "a test replaced a built-in kernel"
    assert registry._forced.get() is None, "use_kernel leaked out of a test"


def make_call(tq=4, tk=4, *, hq=2, hkv=2, d=8, dtype=torch.float32, **kw) -> AttentionCall:
    gen = torch.Generator().manual_seed(tq * 100 + tk)
    q = torch.randn(1, hq, tq, d, generator=gen).to(dtype)
    k = torch.randn(1, hkv, tk, d, generator=gen).to(dtype)
    v = torch.randn(1, hkv, tk, d, generator=gen).to(dtype)
    return AttentionCall(q=q, k=k, v=v, **kw)


class Counting:
    """A trivially fast kernel that counts how often it runs."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, call: AttentionCall) -> torch.Tensor:
        self.calls += 1
        return torch.zeros_like(call.q)


# ------------------------------------------------------------------------------------- names and errors


def test_builtin_kernels_are_registered():
    assert {"manual", "sdpa"} <= set(kernel.available())
    assert "softcap" in kernel.capabilities("manual").features
    assert "softcap" not in kernel.capabilities("sdpa").features
    call = make_call(causal=True)
    assert resolve("manual", call) is manual.attention
    assert resolve("sdpa", call) is sdpa.attention


def test_named_kernel_that_cannot_serve_says_why_and_who_can():
    call = make_call(softcap=30.0)
    with pytest.raises(KernelUnavailable) as info:
        resolve("sdpa", call)
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert "'sdpa'" in message and "softcap" in message
    assert "Kernels that can: manual" in message


def test_explain_is_empty_when_able_and_lists_reasons_when_not():
    call = make_call(dtype=torch.float64, causal=True, hq=4, hkv=2)
    assert explain("manual", call) == []
    assert explain("sdpa", call) == []
    register("fp32_only", Counting(), KernelCaps(dtypes=frozenset({"float32"}), devices=frozenset({"cpu"})))
    reasons = explain("fp32_only", call)
    assert any("dtype float64" in r and "float32" in r for r in reasons), reasons
    assert any("causal" in r for r in reasons) and any("gqa" in r for r in reasons)
    assert all(r.startswith("lacks ") for r in reasons)
    with pytest.raises(KernelUnavailable, match="dtype float64"):
        resolve("fp32_only", call)


def test_unknown_name_lists_the_registered_kernels():
    call = make_call()
    for action in (
        lambda: resolve("flash9", call),
        lambda: explain("flash9", call),
        lambda: kernel.capabilities("flash9"),
    ):
        with pytest.raises(KernelUnavailable, match=r"unknown attention kernel 'flash9'; registered: manual, sdpa"):
            action()
    with pytest.raises(KernelUnavailable, match="registered: manual, sdpa"), kernel.use_kernel("flash9"):
        pass


def test_register_duplicate_needs_replace():
    first, second = Counting(), Counting()
    register("dup", first, FULL_CAPS)
    with pytest.raises(ValueError, match="already registered.*replace=True"):
        register("dup", second, FULL_CAPS)
    assert resolve("dup", make_call()) is first
    register("dup", second, FULL_CAPS, replace=True)
    assert resolve("dup", make_call()) is second
    with pytest.raises(ValueError, match="already registered"):
        register("manual", first, FULL_CAPS)
    with pytest.raises(ValueError, match="reserved"):
        register("auto", first, FULL_CAPS)


def test_registering_never_selects():
    call = make_call(causal=True)
    resolve("auto", call)
    assert auto_choices()
    fast = Counting()
    register("fast", fast, FULL_CAPS)
    assert auto_choices() == {}, "registering must drop auto's cached choices (the new kernel may be faster)"
    assert resolve("sdpa", call) is sdpa.attention
    assert resolve("manual", call) is manual.attention
    assert fast.calls == 0


def test_unregister_removes_the_kernel_and_auto_choices():
    counting = Counting()
    register("temp", counting, FULL_CAPS)
    call = make_call()
    resolve("auto", call)
    assert auto_choices()
    registry.unregister("temp")
    assert "temp" not in kernel.available() and auto_choices() == {}
    with pytest.raises(KernelUnavailable, match="unknown attention kernel 'temp'"):
        resolve("temp", call)
    assert resolve("auto", call) in (manual.attention, sdpa.attention)
    registry.unregister("never-registered")  # a no-op


# ---------------------------------------------------------------------------------------- lazy targets


@pytest.fixture
def lazy_module(tmp_path, monkeypatch):
    """A kernel module on a temporary sys.path entry, named uniquely; removed from sys.modules afterwards."""
    name = f"lazy_kernel_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(
        "import torch\n\nLOADED = True\n\n\ndef attention(call):\n    return torch.full_like(call.q, 7.0)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def test_string_target_is_imported_on_first_resolve_only(lazy_module):
    register("lazy", f"{lazy_module}:attention", FULL_CAPS)
    assert lazy_module not in sys.modules, "registering must not import"
    assert "lazy" in kernel.available()
    assert kernel.capabilities("lazy") is FULL_CAPS
    assert lazy_module not in sys.modules

    softcap_free = KernelCaps(dtypes=frozenset({"float32"}), devices=frozenset({"cpu"}))
    register("lazy_capped", f"{lazy_module}:attention", softcap_free)
    assert explain("lazy_capped", make_call(softcap=5.0)) == ["lacks softcap"]
    assert lazy_module not in sys.modules, "a kernel ruled out by its capabilities need not be imported"

    call = make_call()
    fn = resolve("lazy", call)
    assert lazy_module in sys.modules
    assert fn is sys.modules[lazy_module].attention
    assert (fn(call) == 7.0).all()
    assert resolve("lazy", call) is fn


@pytest.mark.parametrize(
    ("target", "error"),
    [("nonexistent_mod_4f2a:fn", "ModuleNotFoundError"), ("json:no_such_function", "AttributeError")],
)
def test_unloadable_string_target_is_explained_and_skipped_by_auto(target, error):
    register("broken", target, FULL_CAPS)
    call = make_call(causal=True)
    reasons = explain("broken", call)
    assert len(reasons) == 1 and reasons[0].startswith("cannot be loaded") and error in reasons[0], reasons
    with pytest.raises(KernelUnavailable, match="cannot be loaded"):
        resolve("broken", call)
    assert resolve("auto", call) in (manual.attention, sdpa.attention)
    assert set(auto_choices().values()) <= {"manual", "sdpa"}
    # a capable kernel that fails to load is not offered as an alternative either
    with pytest.raises(KernelUnavailable, match="Kernels that can: manual$"):
        resolve("sdpa", make_call(softcap=1.0))


# ----------------------------------------------------------------------------------------------- auto


def test_auto_picks_a_capable_kernel_and_caches_it_per_bucket():
    call = make_call(8, 8, causal=True)
    fn = resolve("auto", call)
    assert fn in (manual.attention, sdpa.attention)
    assert auto_choices() == {shape_bucket(call): "manual" if fn is manual.attention else "sdpa"}


def test_auto_respects_capabilities():
    register("fast_no_softcap", Counting(), torch_kernel_caps(lacking={"softcap"}))
    call = make_call(softcap=20.0, causal=True)
    assert resolve("auto", call) is manual.attention
    assert auto_choices()[shape_bucket(call)] == "manual"


def test_auto_times_once_per_bucket():
    counting = Counting()
    register("counting", counting, FULL_CAPS)
    first = make_call(5, 6, causal=True, q_offset=1)
    chosen = resolve("auto", first)
    timed = counting.calls
    assert timed > 0, "the first call in a bucket is measured, every capable kernel included"
    assert auto_choices()[shape_bucket(first)] in ("manual", "sdpa", "counting")

    same_bucket = make_call(7, 8, causal=True, q_offset=1)  # 7 -> 8, 8 -> 8: the same power-of-two bucket
    assert shape_bucket(same_bucket) == shape_bucket(first)
    assert resolve("auto", same_bucket) is chosen
    assert counting.calls == timed, "a cached bucket is not timed again"

    other_bucket = make_call(16, 16, causal=True)
    assert shape_bucket(other_bucket) != shape_bucket(first)
    resolve("auto", other_bucket)
    assert counting.calls > timed and len(auto_choices()) == 2

    timed = counting.calls
    clear_auto_choices()
    resolve("auto", first)
    assert counting.calls > timed


def test_auto_without_any_capable_kernel_explains_every_kernel():
    meta = torch.empty(1, 2, 4, 8, device="meta")
    call = AttentionCall(q=meta, k=meta, v=meta)  # no registered kernel runs on the meta device
    with pytest.raises(
        KernelUnavailable,
        match=r"no registered attention kernel can serve .*manual: lacks device meta.*sdpa: lacks device meta",
    ):
        resolve("auto", call)
    assert auto_choices() == {}


def test_auto_cache_never_hands_out_a_kernel_that_lacks_a_needed_capability(monkeypatch):
    no_offset = Counting()
    register("no_offset", no_offset, torch_kernel_caps(lacking={"q_offset"}))
    # Let "no_offset" win the timing whenever it is a candidate, so the test does not depend on the clock.
    monkeypatch.setattr(registry, "_fastest", lambda candidates, call: max(candidates, key=lambda n: n == "no_offset"))
    prefill = make_call(16, 16, causal=True)  # q_offset 0: every kernel qualifies
    chunk = make_call(13, 16, causal=True, q_offset=3)  # same bucket (13 -> 16), but needs q_offset
    assert explain("no_offset", chunk) == ["lacks q_offset"]
    assert resolve("auto", prefill) is no_offset
    assert resolve("auto", chunk) is not no_offset


# ----------------------------------------------------------------------------------------- use_kernel


def test_use_kernel_pins_auto_and_restores_it():
    softcap_call = make_call(softcap=10.0)
    call = make_call(causal=True)
    with kernel.use_kernel("manual"):
        assert resolve("auto", call) is manual.attention
        assert auto_choices() == {}, "a pinned kernel is not a measured choice"
    with kernel.use_kernel("sdpa"):
        assert resolve("auto", call) is sdpa.attention
        with pytest.raises(KernelUnavailable, match="softcap"):  # pinned, it fails loudly rather than fall back
            resolve("auto", softcap_call)
        with kernel.use_kernel("manual"):
            assert resolve("auto", softcap_call) is manual.attention
        assert resolve("auto", call) is sdpa.attention  # the inner block restored the outer pin
    assert resolve("auto", softcap_call) is manual.attention  # unpinned: auto chooses again


def test_use_kernel_restores_after_an_exception():
    softcap_call = make_call(softcap=10.0)
    with pytest.raises(RuntimeError, match="boom"), kernel.use_kernel("sdpa"):
        raise RuntimeError("boom")
    assert resolve("auto", softcap_call) is manual.attention


def test_auto_while_compiling_takes_the_preferred_kernel_and_caches_nothing(monkeypatch):
    monkeypatch.setattr(registry, "_cannot_time", lambda: True)
    counting = Counting()
    register("counting", counting, FULL_CAPS, preference=-1)
    call = make_call(causal=True)
    assert resolve("auto", call) is sdpa.attention  # sdpa is preferred over the manual oracle
    assert counting.calls == 0 and auto_choices() == {}, "a guess is neither timed nor cached"
    softcapped = make_call(softcap=5.0)
    assert resolve("auto", softcapped) is manual.attention  # preference never overrides capabilities


def test_auto_under_torch_compile_does_not_pick_the_oracle():
    call = make_call(8, 8, causal=True)

    @torch.compile(backend="eager", fullgraph=False)
    def run(q):
        c = AttentionCall(q=q, k=call.k, v=call.v, causal=True)
        return resolve("auto", c)(c)

    torch.testing.assert_close(run(call.q), sdpa.attention(call))
    assert auto_choices() == {}


def test_auto_under_torch_export_keeps_the_sequence_dim_dynamic():
    """An exported program runs at every size of its dynamic dims: "auto" must not compute a shape bucket (it
    rounds lengths to powers of two, which would specialise them) nor reuse an eager choice made for one."""
    call = make_call(8, 8, causal=True)
    resolve("auto", call)  # an eager choice for the (8, 8) bucket exists now; the export must not read it

    class Attend(torch.nn.Module):
        def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            c = AttentionCall(q=q, k=k, v=v, causal=True)
            return resolve("auto", c)(c)

    seq = torch.export.Dim("seq", min=2, max=64)
    program = torch.export.export(Attend(), (call.q, call.k, call.v), strict=False,
                                  dynamic_shapes={"q": {2: seq}, "k": {2: seq}, "v": {2: seq}})
    longer = make_call(20, 20, causal=True)
    torch.testing.assert_close(program.module()(longer.q, longer.k, longer.v), sdpa.attention(longer))


def test_a_lazy_kernel_that_fails_to_import_is_reported_not_raised(tmp_path, monkeypatch):
    (tmp_path / "broken_backend.py").write_text("raise RuntimeError('no GPU driver')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    register("broken", "broken_backend:attention", FULL_CAPS)
    call = make_call(causal=True)
    assert any("cannot be loaded: RuntimeError: no GPU driver" in r for r in explain("broken", call))
    assert resolve("auto", call) in (manual.attention, sdpa.attention)


def test_use_kernel_pins_are_private_to_each_thread_and_task():
    """A server handles requests concurrently: one request's pin must not leak into another's."""
    import asyncio
    import threading

    call = make_call(causal=True)
    entered, release = threading.Event(), threading.Event()
    seen: dict[str, object] = {}

    def pinned_request() -> None:
        with kernel.use_kernel("manual"):
            entered.set()
            release.wait(timeout=10)
            seen["pinned"] = resolve("auto", call)

    worker = threading.Thread(target=pinned_request)
    worker.start()
    assert entered.wait(timeout=10)
    seen["other thread"] = registry._forced.get()
    release.set()
    worker.join()
    assert seen == {"pinned": manual.attention, "other thread": None}

    async def task(name: str, pin: str | None) -> str | None:
        if pin is None:
            await asyncio.sleep(0.01)
            return registry._forced.get()
        with kernel.use_kernel(pin):
            await asyncio.sleep(0.02)  # the unpinned task runs while this one holds its pin
            return registry._forced.get()

    async def both() -> list[str | None]:
        return list(await asyncio.gather(task("a", "sdpa"), task("b", None)))

    assert asyncio.run(both()) == ["sdpa", None]


def test_registering_a_kernel_makes_its_name_valid_in_configs():
    import specs

    def attention_with(name: str):
        return specs.apply_overrides(specs.load_preset("llama-tiny"), [f"attention.kernel={name}"])

    with pytest.raises(specs.ConfigError, match="unknown attention kernel 'plugged'"):
        attention_with("plugged")
    register("plugged", Counting(), FULL_CAPS)
    assert attention_with("plugged").attention.kernel == "plugged"
    registry.unregister("plugged")
    with pytest.raises(specs.ConfigError, match="unknown attention kernel 'plugged'"):
        attention_with("plugged")


def test_builtin_names_known_to_configs_are_the_registered_builtins():
    from specs.kernel_names import BUILTIN_KERNELS

    assert list(BUILTIN_KERNELS) == kernel.available()[: len(BUILTIN_KERNELS)]


def test_can_serve_follows_capabilities_and_pins():
    softcapped = make_call(softcap=3.0)
    assert registry.can_serve("manual", softcapped) and not registry.can_serve("sdpa", softcapped)
    assert registry.can_serve("auto", softcapped)
    with kernel.use_kernel("sdpa"):
        assert not registry.can_serve("auto", softcapped)


class _SlowBackward(torch.autograd.Function):
    """Identity on q's shape: instant forward, a backward that takes 20 ms."""

    @staticmethod
    def forward(ctx, q):
        return q.clone()

    @staticmethod
    def backward(ctx, grad):
        import time

        time.sleep(0.02)
        return grad


def test_auto_times_the_backward_when_the_call_needs_gradients():
    """A kernel that is fastest forward but slow backward wins inference buckets and loses training ones; the
    timing leaves no gradient on the caller's tensors."""
    register("fast_forward", lambda call: _SlowBackward.apply(call.q), FULL_CAPS)
    register("steady", lambda call: call.q * 1.0, FULL_CAPS)
    q = torch.randn(1, 2, 4, 8, requires_grad=True)
    k, v = torch.randn(1, 2, 4, 8), torch.randn(1, 2, 4, 8)
    training = AttentionCall(q=q, k=k, v=v)
    assert registry._fastest(["fast_forward", "steady"], training) == "steady" and q.grad is None
    inference = AttentionCall(q=q.detach(), k=k, v=v)
    assert shape_bucket(training) != shape_bucket(inference)  # "backward" is part of the bucket


def test_triton_flash_is_registered_exactly_where_triton_is_installed():
    from importlib.util import find_spec

    assert ("triton_flash" in kernel.available()) == (find_spec("triton") is not None)
