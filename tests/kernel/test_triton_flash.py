"""``triton_flash`` against the ``manual`` oracle: output, log-sum-exp and all three gradients, plus its
registration and the calls it refuses.

Without a GPU the kernels run in Triton's interpreter on CPU tensors. ``TRITON_INTERPRET`` must be set before
Triton is first imported (its own library functions, ``tl.zeros``, ``tl.sum``..., are decorated then), and
``import kernel`` already imports Triton through ``torch._dynamo``; it is also what gives ``triton_flash`` its
CPU capability when the kernel is registered. Turning it on for the whole test session would offer an
interpreted kernel to every ``"auto"`` call of every other test, so this module runs its tests in a child
pytest process started with ``TRITON_INTERPRET=1`` (:func:`test_in_an_interpreter_process`); with a GPU, or
with the variable already set, they run in place.

Tolerances are relative to the largest reference value (``max(1, |ref|max)``), per dtype:

* float32: 1e-5. The sums run in another order (tiles, online rescaling, base-2 exponentials); observed
  at most 9e-7 (output) and 3e-6 (gradients) over the cases below at D=16 and D=64.
* float16: 5e-3 and bfloat16: 4e-2. The oracle rounds once (its float32 result to the dtype), the kernel also
  rounds the probabilities to the dtype before ``p @ v`` and ``ds`` before ``ds @ k`` as every flash kernel
  does (tensor-core inputs); observed absolute errors at most 2e-3 / 4e-3 (float16 output / gradients) and
  1.6e-2 / 6.3e-2 (bfloat16; that gradient's reference exceeds 1.5 in magnitude, so within the scaled bound):
  one or two units in the last place of each format.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton", reason="Triton is not installed (pip install 'lmplanes[triton]')")

import kernel  # noqa: E402
from kernel import builtin, registry  # noqa: E402
from kernel.caps import triton_flash_caps, triton_interpreted  # noqa: E402
from kernel.registry import KernelUnavailable, resolve  # noqa: E402
from specs.attention import AttentionCall  # noqa: E402
from tensor.masks import call_allow_mask  # noqa: E402
from tensor.ops import softcap as apply_softcap  # noqa: E402

ON_GPU = torch.cuda.is_available() and not triton_interpreted()
RUN_HERE = ON_GPU or triton_interpreted()
DEVICE = "cuda" if ON_GPU else "cpu"
TOL = {torch.float32: 1e-5, torch.float16: 5e-3, torch.bfloat16: 4e-2}

here = pytest.mark.skipif(not RUN_HERE, reason="runs in the TRITON_INTERPRET=1 child process instead")
pytestmark = pytest.mark.triton


@pytest.mark.skipif(RUN_HERE, reason="this is the process the tests run in")
def test_in_an_interpreter_process(request):
    """Every other test of this file, in a child pytest process under Triton's interpreter."""
    args = [sys.executable, "-m", "pytest", __file__, "-p", "no:cacheprovider", "-q", "--durations=5",
            "--deselect", f"{__file__}::test_in_an_interpreter_process"]
    if request.config.option.markexpr:
        args += ["-m", request.config.option.markexpr]
    start = time.perf_counter()
    child = subprocess.run(args, env={**os.environ, "TRITON_INTERPRET": "1"}, cwd=Path(__file__).parents[2],
                           capture_output=True, text=True, timeout=1800)
    report = f"{child.stdout}{child.stderr}({time.perf_counter() - start:.0f} s)"
    assert child.returncode == 0, report
    assert "skipped" not in child.stdout.splitlines()[-1], report  # under the interpreter every test runs


@pytest.fixture(scope="module")
def flash_attention():
    """The kernel function that also returns the log-sum-exp."""
    from kernel.triton_flash import flash_attention

    return flash_attention


def make_qkv(b, hq, hkv, tq, tk, d, dtype, *, seed=0, strided=False):
    gen = torch.Generator().manual_seed(seed)

    def tensor(h, t):
        if strided:  # (B, T, H, D) projections viewed as (B, H, T, D), as attn hands them over
            x = torch.randn(b, t, h, d, generator=gen).transpose(1, 2)
        else:
            x = torch.randn(b, h, t, d, generator=gen)
        return x.to(device=DEVICE, dtype=dtype).requires_grad_()

    return tensor(hq, tq), tensor(hkv, tk), tensor(hkv, tk)


def reference_lse(call: AttentionCall) -> torch.Tensor:
    """log-sum-exp of the visible logits in float64 (``+inf`` for a row that sees nothing)."""
    q, k = call.q.detach().double(), call.k.detach().double()
    k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
    scale = call.scale if call.scale is not None else q.shape[-1] ** -0.5
    s = q @ k.transpose(-2, -1) * scale
    if call.softcap is not None:
        s = apply_softcap(s, call.softcap)
    allow = call_allow_mask(call)
    if allow is not None:
        s = s.masked_fill(~allow, float("-inf"))
    lse = torch.logsumexp(s, dim=-1)
    return torch.where(lse == float("-inf"), float("inf"), lse).float()


def check_against_oracle(flash_attention, dtype, *, shape, strided=False, seed=0, **kw):
    b, hq, hkv, tq, tk, d = shape
    kw = {key: val.to(DEVICE) if isinstance(val, torch.Tensor) else val for key, val in kw.items()}
    q, k, v = make_qkv(b, hq, hkv, tq, tk, d, dtype, seed=seed, strided=strided)
    call = AttentionCall(q=q, k=k, v=v, **kw)
    assert resolve("triton_flash", call) is not None  # the capabilities cover everything this grid asks

    out, lse = flash_attention(call)
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed + 1)).to(DEVICE, dtype)
    got = [out, *torch.autograd.grad(out, (q, k, v), grad)]
    ref_out = kernel.resolve("manual", call)(call)
    want = [ref_out, *torch.autograd.grad(ref_out, (q, k, v), grad)]

    assert out.dtype == dtype and out.shape == q.shape
    errors = {}
    for name, g, w in zip(("out", "dq", "dk", "dv"), got, want):
        assert g.shape == w.shape and g.dtype == w.dtype, name
        bound = TOL[dtype] * max(1.0, w.float().abs().max().item())
        errors[name] = (g.float() - w.float()).abs().max().item()
        assert errors[name] <= bound, f"{name}: max error {errors[name]:.2e} > {bound:.2e} ({errors})"
    if dtype == torch.float32:
        torch.testing.assert_close(lse, reference_lse(call), atol=1e-5, rtol=1e-5)
    return errors


# Features at tiny, ragged shapes (tiles are 16 x 16 under the interpreter): (B, Hq, Hkv, Tq, Tk, D), call fields.
CASES = {
    "plain": ((2, 2, 2, 21, 37, 16), {}),
    "causal_gqa": ((2, 4, 2, 37, 37, 16), {"causal": True}),
    "decode_mqa": ((2, 4, 1, 3, 37, 16), {"causal": True, "q_offset": 34}),
    "chunk_per_row": ((2, 2, 1, 9, 37, 16),
                      {"causal": True, "q_offset": torch.tensor([28, 5]), "kv_lens": torch.tensor([37, 14])}),
    # Positions one short of a tile edge (tiles are 16 wide): where the kernel stops masking must be exact.
    "decode_edges": ((2, 2, 1, 3, 40, 16),
                     {"causal": True, "q_offset": torch.tensor([14, 30]), "kv_lens": torch.tensor([31, 40])}),
    "window_causal": ((1, 2, 2, 40, 40, 16), {"causal": True, "window": 7}),
    "window_causal_wide": ((1, 2, 1, 40, 40, 16), {"causal": True, "window": 20}),
    "window_bidir_offset": ((2, 2, 1, 18, 35, 16), {"window": 5, "q_offset": torch.tensor([10, 16])}),
    "window_bidir_wide": ((2, 2, 1, 3, 40, 16), {"window": 20, "q_offset": torch.tensor([11, 2])}),
    # One row per offset (and key length) modulo the tile width: every way a rule's edge can fall in a tile.
    "sweep_causal": ((16, 2, 1, 20, 40, 16),
                     {"causal": True, "q_offset": torch.arange(16), "kv_lens": 24 + torch.arange(16)}),
    "sweep_window": ((16, 2, 1, 20, 40, 16), {"causal": True, "window": 7, "q_offset": torch.arange(16)}),
    "sweep_window_bidir": ((16, 1, 1, 20, 40, 16), {"window": 5, "q_offset": torch.arange(16)}),
    "sweep_window_bidir_wide": ((16, 1, 1, 20, 40, 16),
                                {"window": 20, "q_offset": torch.arange(16), "kv_lens": 24 + torch.arange(16)}),
    "padding_empty_row": ((2, 2, 2, 17, 33, 16), {"kv_lens": torch.tensor([0, 31])}),
    "softcap_scale": ((1, 4, 2, 33, 33, 16), {"causal": True, "softcap": 2.0, "scale": 0.6}),
    "strided": ((2, 2, 2, 19, 19, 16), {"causal": True, "strided": True}),
}


@here
@pytest.mark.parametrize("case", list(CASES))
def test_float32_matches_oracle(flash_attention, case):
    shape, kw = CASES[case]
    check_against_oracle(flash_attention, torch.float32, shape=shape, **kw)


@here
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("case", ["causal_gqa", "chunk_per_row", "softcap_scale"])
def test_half_precision_matches_oracle(flash_attention, case, dtype):
    shape, kw = CASES[case]
    check_against_oracle(flash_attention, dtype, shape=shape, **kw)


@here
@pytest.mark.parametrize("head_dim", [32, 64, 128])
def test_head_dims(flash_attention, head_dim):
    check_against_oracle(flash_attention, torch.float32, shape=(1, 2, 1, 17, 20, head_dim), causal=True)


@here
def test_a_query_that_sees_nothing_gives_zeros_and_zero_gradients(flash_attention):
    q, k, v = make_qkv(1, 2, 2, 4, 20, 16, torch.float32)
    call = AttentionCall(q=q, k=k, v=v, kv_lens=torch.tensor([0], device=DEVICE))
    out, lse = flash_attention(call)
    out.sum().backward()
    assert torch.equal(out, torch.zeros_like(out)) and torch.isinf(lse).all() and (lse > 0).all()
    assert all(torch.equal(t.grad, torch.zeros_like(t)) for t in (q, k, v))


SLOW_GRID = [  # every case but the sweeps (16 rows each), in every dtype: 4 query heads over 1 kv head at D=64, over 2 at D=16
    pytest.param(case, dtype, hkv, d, id=f"{case}-{str(dtype)[6:]}-hkv{hkv}-d{d}")
    for case in CASES
    if not case.startswith("sweep")
    for dtype in (torch.float32, torch.float16, torch.bfloat16)
    for hkv, d in ((1, 64), (2, 16))
]


@here
@pytest.mark.slow
@pytest.mark.parametrize(("case", "dtype", "hkv", "head_dim"), SLOW_GRID)
def test_feature_grid(flash_attention, case, dtype, hkv, head_dim):
    (b, _, _, tq, tk, _), kw = CASES[case]
    check_against_oracle(flash_attention, dtype, shape=(b, 4, hkv, tq, tk, head_dim), seed=7, **kw)


# ------------------------------------------------------------------------------------ registration and refusals


def small_call(**kw) -> AttentionCall:
    d = kw.pop("d", 16)
    dtype = kw.pop("dtype", torch.float32)
    q, k, v = make_qkv(1, 2, 2, 4, 4, d, dtype)
    return AttentionCall(q=q.detach(), k=k.detach(), v=v.detach(), **kw)


@here
def test_registered_lazily_with_the_interpreter_adding_cpu(monkeypatch):
    assert "triton_flash" in kernel.available()
    call = small_call(causal=True)
    assert kernel.explain("triton_flash", call) == []
    fn = resolve("triton_flash", call)
    torch.testing.assert_close(fn(call), kernel.resolve("manual", call)(call), atol=1e-5, rtol=1e-5)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert triton_flash_caps().devices == {"cuda"}
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert triton_flash_caps().devices == {"cuda", "cpu"}


REFUSED = {
    "allow_mask": ({"allow_mask": torch.ones(4, 4, dtype=torch.bool)}, "allow_mask"),
    "dropout": ({"dropout_p": 0.1}, "dropout"),
    "head_dim": ({"d": 8}, "head dim 8"),
    "float64": ({"dtype": torch.float64}, "dtype float64"),
}


@here
@pytest.mark.parametrize("which", list(REFUSED))
def test_refuses_what_it_lacks_and_auto_never_offers_it(monkeypatch, which):
    kw, phrase = REFUSED[which]
    call = small_call(**kw)
    with pytest.raises(KernelUnavailable, match=f"'triton_flash' cannot serve.*lacks {phrase}.*Kernels that can: manual"):
        resolve("triton_flash", call)

    offered = []

    def first_candidate(candidates, call, repeats=3):
        offered.append(list(candidates))
        return candidates[0]

    monkeypatch.setattr(registry, "_fastest", first_candidate)
    registry.clear_auto_choices()
    resolve("auto", call)
    registry.clear_auto_choices()
    resolve("auto", small_call(causal=True))  # the control: a call it can serve does offer it
    assert "triton_flash" not in offered[0] and "triton_flash" in offered[1]


@here
def test_absent_without_triton(monkeypatch):
    monkeypatch.setattr(builtin, "find_spec", lambda name: None)
    registry.unregister("triton_flash")
    try:
        assert builtin.register_triton_flash() is False
        assert "triton_flash" not in kernel.available()
    finally:
        monkeypatch.undo()
        assert builtin.register_triton_flash()


# ------------------------------------------------------------------------------------- inside a model, by name

MODEL_VARIANTS = {"gqa-rope": [], "window": ["attention.window=5"], "softcap": ["attention.softcap=30"]}


@here
@pytest.mark.parametrize("variant", list(MODEL_VARIANTS))
def test_in_a_model_training_step_and_cached_decoding_match_the_oracle(variant):
    """llama-tiny (head dim 16, 4 query heads over 2 kv heads): the loss gradients of every parameter, and a
    prefill plus decode steps through a static and a paged KV cache (gathered for this kernel), against the
    same model on ``manual``, at the float32 tolerance of the grid above (1e-5)."""
    import model
    import specs

    cfg = specs.apply_overrides(specs.load_preset("llama-tiny"), [*MODEL_VARIANTS[variant], "init_std=0.08"])
    torch.manual_seed(0)
    m = model.build(cfg).to(DEVICE)
    ids = torch.randint(0, cfg.vocab_size, (2, 21), generator=torch.Generator().manual_seed(1)).to(DEVICE)

    def step(name):
        m.zero_grad()
        with kernel.use_kernel(name):
            logits = m(ids)
            logits.float().square().mean().backward()
        return logits.detach(), {n: p.grad.clone() for n, p in m.named_parameters()}

    (got, got_grads), (want, want_grads) = step("triton_flash"), step("manual")
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    for n, g in got_grads.items():
        torch.testing.assert_close(g, want_grads[n], atol=1e-5, rtol=1e-5, msg=n)

    for cache in (m.new_cache(2, 24), m.new_cache(2, 24, paged=specs.PagedSpec(block_size=4))):
        stepped, start = [], 0
        with torch.no_grad(), kernel.use_kernel("triton_flash"):
            for size in (9, 1, 5, 1, 5):
                stepped.append(m(ids[:, start:start + size], cache=cache))
                start += size
        torch.testing.assert_close(torch.cat(stepped, dim=1), want, atol=1e-5, rtol=1e-5)
