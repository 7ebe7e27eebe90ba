"""Rows that move independently (right padding, released slots) and decode steps that compile once.

Tolerance as in test_decode_equals_forward.py: float32, ``ATOL = 1e-5`` (observed ~2e-6).
"""

from __future__ import annotations

import pytest
import torch

import model
import specs

ATOL = 1e-5
# The caches whose rows move independently: contiguous (eager, fixed shapes) and paged in blocks of 3 tokens.
CACHE_KINDS = {
    "static": {},
    "static_fixed_shapes": {"fixed_shapes": True},
    "paged": {"paged": specs.PagedSpec(block_size=3)},
}


def _model(*overrides: str) -> torch.nn.Module:
    cfg = specs.apply_overrides(specs.load_preset("llama-tiny"), [*overrides, "init_std=0.08"])
    torch.manual_seed(0)
    return model.build(cfg).eval()


def _ids(m, length: int, seed: int) -> torch.Tensor:
    return torch.randint(0, m.config.vocab_size, (length,), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("cache_kind", sorted(CACHE_KINDS))
@pytest.mark.parametrize("overrides", [(), ("attention.window=4",), ("positions=learned", "rope=null")])
@torch.no_grad()
def test_right_padded_prompts_then_per_row_decoding(overrides, cache_kind):
    """Prompts of different lengths, right-padded into one prefill; ``evict`` rolls back each row's padding,
    then every row decodes at its own position. Each row equals its own unpadded forward."""
    m = _model(*overrides)
    lens, n_new = [7, 3, 5], 4
    rows = [_ids(m, n + n_new, seed=i) for i, n in enumerate(lens)]
    width = max(lens)
    prompt = torch.zeros(len(rows), width, dtype=torch.int64)
    for b, (row, n) in enumerate(zip(rows, lens)):
        prompt[b, :n] = row[:n]
    cache = m.new_cache(len(rows), width + n_new, **CACHE_KINDS[cache_kind])
    prefill = m(prompt, cache=cache)
    cache.evict(torch.tensor([width - n for n in lens]))
    assert cache.seq_lens.tolist() == lens
    steps = []
    for i in range(n_new):
        token = torch.stack([row[n + i] for row, n in zip(rows, lens)])[:, None]
        steps.append(m(token, cache=cache))
    stepped = torch.cat(steps, dim=1)
    for b, (row, n) in enumerate(zip(rows, lens)):
        full = m(row[None])[0]
        torch.testing.assert_close(prefill[b, :n], full[:n], atol=ATOL, rtol=0)
        torch.testing.assert_close(stepped[b], full[n:], atol=ATOL, rtol=0)


@pytest.mark.parametrize("cache_kind", ["static", "paged"])
@torch.no_grad()
def test_a_released_slot_takes_a_new_request_while_the_other_row_goes_on(cache_kind):
    """Continuous batching: row 0 finishes and is reset; a new prompt is prefilled into it in the same forward
    as row 1's next token (row 1 padded on the right, then rolled back). Both rows stay exact."""
    m = _model()
    first, second, newcomer = _ids(m, 6, seed=1), _ids(m, 9, seed=2), _ids(m, 5, seed=3)
    cache = m.new_cache(2, 16, **CACHE_KINDS[cache_kind])
    m(torch.stack([first, second[:6]]), cache=cache)
    cache.reset([0])
    mixed = torch.stack([newcomer[:3], torch.cat([second[6:7], torch.zeros(2, dtype=torch.int64)])])
    out = m(mixed, cache=cache)
    cache.evict(torch.tensor([0, 2]))
    assert cache.seq_lens.tolist() == [3, 7]
    tail = m(torch.stack([newcomer[3:5], second[7:9]]), cache=cache)
    new_full, second_full = m(newcomer[None])[0], m(second[None])[0]
    torch.testing.assert_close(out[0], new_full[:3], atol=ATOL, rtol=0)
    torch.testing.assert_close(out[1, :1], second_full[6:7], atol=ATOL, rtol=0)
    torch.testing.assert_close(tail[0], new_full[3:5], atol=ATOL, rtol=0)
    torch.testing.assert_close(tail[1], second_full[7:9], atol=ATOL, rtol=0)


@torch.no_grad()
def test_paged_views_run_only_the_rows_with_work():
    """Continuous batching on a paged cache: each request is prefilled alone through a one-row view, then the
    running rows decode together through a view over them, whatever their lengths. A second request with the
    same prompt links the first one's prompt blocks instead of computing them. Every row stays exact."""
    m = _model()
    cache = m.new_cache(3, 24, paged=specs.PagedSpec(block_size=4))
    prompts = [_ids(m, 9, seed=1), _ids(m, 5, seed=2)]
    prompts.append(prompts[0].clone())  # same prompt as row 0
    rows = [torch.cat([p, _ids(m, 4, seed=10 + i)]) for i, p in enumerate(prompts)]
    logits: list[list[torch.Tensor]] = [[], [], []]
    running: list[int] = []
    for joining in (0, 1, 2):
        shared = cache.share_prefix(joining, prompts[joining].tolist())
        assert shared == (8 if joining == 2 else 0)
        logits[joining].append(m(prompts[joining][None, shared:], cache=cache.select([joining]))[0])
        if running:  # the rows already running take one step together
            done = [int(cache.seq_lens[r]) for r in running]
            tokens = torch.stack([rows[r][n] for r, n in zip(running, done)])[:, None]
            out = m(tokens, cache=cache.select(running))
            for i, r in enumerate(running):
                logits[r].append(out[i])
        running.append(joining)
    for r, row in enumerate(rows):
        full = m(row[None])[0]
        start = 8 if r == 2 else 0
        got = torch.cat(logits[r])
        torch.testing.assert_close(got, full[start : start + len(got)], atol=ATOL, rtol=0)


def test_a_paged_cache_has_no_fixed_shapes_mode():
    with pytest.raises(ValueError, match="no fixed_shapes mode"):
        _model().new_cache(1, 8, fixed_shapes=True, paged=specs.PagedSpec())


@pytest.mark.parametrize("kernel_name", ["auto", "manual", "sdpa"])
@torch.no_grad()
def test_fixed_shape_decode_step_compiles_once(kernel_name, compile_counter):
    """gpt-fast style: with a fixed-shape cache one decode step is one graph (fullgraph=True: no breaks), and
    ten steps at growing lengths reuse it. The compiled steps equal the eager full forward."""
    m = _model(f"attention.kernel={kernel_name}")
    ids = torch.randint(0, m.config.vocab_size, (2, 18), generator=torch.Generator().manual_seed(0))
    cache = m.new_cache(2, 24, fixed_shapes=True)
    m(ids[:, :8], cache=cache)
    backend = compile_counter
    step = torch.compile(lambda token: m(token, cache=cache), backend=backend, fullgraph=True)
    stepped = torch.cat([step(ids[:, i : i + 1]) for i in range(8, 18)], dim=1)
    assert backend.compiles == 1
    torch.testing.assert_close(stepped, m(ids)[:, 8:], atol=ATOL, rtol=0)


@pytest.mark.parametrize("overrides", [(), ("positions=learned", "rope=null")])
def test_training_forward_and_backward_compile_as_one_graph(overrides, compile_counter):
    """No host sync and no graph break in the training forward (positions are checked on the host, from shapes)."""
    m = _model(*overrides).train()
    ids = torch.randint(0, m.config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(0))
    backend = compile_counter
    compiled = torch.compile(m, backend=backend, fullgraph=True)
    compiled(ids).logsumexp(-1).mean().backward()
    compiled(ids[:, :16]).sum()
    assert backend.compiles == 1
    assert all(p.grad is not None for p in m.parameters())
