"""``serve.compile_decoding``: one graph per cache size, outputs equal to eager decoding in every decode loop."""

from __future__ import annotations

import pytest
import torch

import model
import serve
import specs
from specs import GenerationConfig

ATOL = 1e-5  # fp32: the compiled step reads whole fixed-size buffers with masked tails, same arithmetic


def _lm(seed: int = 0, *overrides: str) -> torch.nn.Module:
    cfg = specs.apply_overrides(specs.load_preset("llama-tiny"), ["init_std=0.1", *overrides])
    torch.manual_seed(seed)
    return model.build(cfg).eval()


def _ids(length: int, seed: int, rows: int = 1) -> torch.Tensor:
    return torch.randint(3, 256, (rows, length), generator=torch.Generator().manual_seed(seed))


def test_prompts_of_different_lengths_share_one_graph_and_equal_eager(compile_counter):
    lm = _lm()
    compiled = serve.compile_decoding(lm, backend=compile_counter)
    cfg = GenerationConfig(max_new_tokens=12, repetition_penalty=1.2)
    for length in (3, 9, 20):  # caches of 15, 21, 32 tokens all round up to 64
        ids = _ids(length, length)
        assert torch.equal(serve.generate(compiled, ids, cfg), serve.generate(lm, ids, cfg))
    assert compile_counter.compiles == 1


def test_the_compiled_step_gives_the_eager_logits(compile_counter):
    lm = _lm()
    compiled = serve.compile_decoding(lm, backend=compile_counter)
    ids = _ids(16, 0, rows=2)
    cache = compiled.new_cache(2, 16)
    assert cache.max_len == 64 and cache.fixed_shapes
    compiled(ids[:, :6], cache=cache)
    stepped = torch.cat([compiled(ids[:, i : i + 1], cache=cache) for i in range(6, 16)], dim=1)
    torch.testing.assert_close(stepped, lm(ids)[:, 6:], atol=ATOL, rtol=0)
    assert compile_counter.compiles == 1


def test_padded_batches_beam_search_and_speculative_decoding_run_through_it(compile_counter):
    lm = _lm()
    compiled = serve.compile_decoding(lm, backend=compile_counter)
    ids, mask = _ids(7, 1, rows=2), torch.tensor([[0, 0, 1, 1, 1, 1, 1], [1] * 7])
    greedy = GenerationConfig(max_new_tokens=8)
    assert torch.equal(serve.generate(compiled, ids, greedy, attention_mask=mask),
                       serve.generate(lm, ids, greedy, attention_mask=mask))
    beams = GenerationConfig(max_new_tokens=6, num_beams=3, pad_token_id=1)
    assert torch.equal(serve.generate(compiled, ids, beams), serve.generate(lm, ids, beams))
    draft = _lm(1, "n_layers=1")
    spec = serve.speculative_generate(compiled, draft, ids[:1], greedy, k=3)
    assert torch.equal(spec.sequences, serve.generate(lm, ids[:1], greedy))


def test_cache_sizes_round_up_to_a_power_of_two_within_the_context():
    compiled = serve.compile_decoding(_lm(0, "max_seq_len=100"))
    assert [compiled.new_cache(1, n).max_len for n in (1, 64, 65, 100)] == [64, 64, 100, 100]
    with pytest.raises(ValueError):
        compiled.new_cache(1, 101)



def test_frozen_weights_under_inductor_give_the_eager_logits_and_tokens():
    """The real back-end with Inductor's freezing (weights as graph constants, prepacked for the CPU kernels):
    same logits as eager within the fp32 tolerance, same greedy tokens."""
    torch._dynamo.reset()
    lm = _lm()
    compiled = serve.compile_decoding(lm, freeze=True)
    ids = _ids(10, 3)
    cache = compiled.new_cache(1, 16)
    with torch.no_grad():
        compiled(ids[:, :4], cache=cache)
        stepped = torch.cat([compiled(ids[:, i : i + 1], cache=cache) for i in range(4, 10)], dim=1)
        torch.testing.assert_close(stepped, lm(ids)[:, 4:], atol=ATOL, rtol=0)
    cfg = GenerationConfig(max_new_tokens=10)
    assert torch.equal(serve.generate(compiled, ids, cfg), serve.generate(lm, ids, cfg))
    with torch.no_grad():
        next(lm.parameters()).mul_(1.5)
    with pytest.raises(RuntimeError, match="weights changed"):
        serve.generate(compiled, ids, cfg)
    afresh = serve.compile_decoding(lm, freeze=True)  # compiles again: never the graph that holds the old weights
    assert torch.equal(serve.generate(afresh, ids, cfg), serve.generate(lm, ids, cfg))
    torch._dynamo.reset()


def test_every_graph_a_frozen_step_compiles_is_frozen():
    """Freezing is set only around a call that has to compile (steps first run under dynamo's
    ``fail_on_recompile`` stance): the first graph and one compiled later for another cache size both hold the
    weights as constants. Writing through ``.data`` (which the version check cannot see) shows it: the frozen
    steps keep the old head while the eager model's logits become zeros."""
    torch._dynamo.reset()
    lm = _lm()
    compiled = serve.compile_decoding(lm, freeze=True)
    ids = _ids(6, 2)
    caches = [compiled.new_cache(1, n) for n in (8, 100)]  # 64 and 128 slots: two graphs
    with torch.no_grad():
        for cache in caches:
            compiled(ids[:, :4], cache=cache)
            compiled(ids[:, 4:5], cache=cache)  # compiles this cache size's step
        lm.lm_head.weight.data.zero_()
        assert not lm(ids).any()
        for cache in caches:
            assert compiled(ids[:, 5:], cache=cache).abs().min() > 0
    torch._dynamo.reset()


def test_two_frozen_models_never_share_a_graph():
    """Frozen steps drop dynamo's guards on module attributes, which are what told two models of the same shape
    apart: each frozen step has code of its own, so the second model never runs the first one's graph."""
    torch._dynamo.reset()
    first, second = _lm(0), _lm(1)
    ids, cfg = _ids(8, 0), GenerationConfig(max_new_tokens=10)
    assert not torch.equal(serve.generate(first, ids, cfg), serve.generate(second, ids, cfg))
    for lm in (first, second):
        assert torch.equal(serve.generate(serve.compile_decoding(lm, freeze=True), ids, cfg), serve.generate(lm, ids, cfg))
    torch._dynamo.reset()


def test_frozen_weights_that_change_are_refused_not_used_stale():
    """The check runs when a decode loop begins (its prefill), not at every step (see serve.compiled)."""
    lm = _lm()
    compiled = serve.compile_decoding(lm, freeze=True)
    ids, cfg = _ids(4, 0), GenerationConfig(max_new_tokens=3)
    assert torch.equal(serve.generate(compiled, ids, cfg), serve.generate(lm, ids, cfg))  # compiles the step
    with torch.no_grad():
        next(lm.parameters()).mul_(2.0)  # e.g. a fine-tuning step after compiling
    cache = compiled.new_cache(1, 8)
    with pytest.raises(RuntimeError, match="weights changed after compile_decoding"):
        compiled(ids[:, :3], cache=cache)
    with pytest.raises(RuntimeError, match="weights changed after compile_decoding"):
        serve.generate(compiled, ids, cfg)
    # Calls that never reach the frozen graph run the current weights, as the eager model does.
    torch.testing.assert_close(compiled(ids), lm(ids), atol=0, rtol=0)
    with pytest.raises(ValueError, match="freeze=True"):
        serve.compile_decoding(lm, freeze=True, backend="eager")


@pytest.mark.parametrize("change", ["parameter", "submodule", "buffer"])
def test_frozen_weights_replaced_rather_than_written_are_refused_too(change):
    """The check looks at what each slot of each module holds, not only at in-place versions: a parameter or a
    whole layer swapped for another, or a buffer added, is a change as well."""
    lm = _lm()
    compiled = serve.compile_decoding(lm, freeze=True)
    if change == "parameter":
        lm.lm_head.weight = torch.nn.Parameter(lm.lm_head.weight.detach().clone())
    elif change == "submodule":
        lm.layers[0].mlp = _lm(1).layers[0].mlp
    else:
        lm.layers[0].register_buffer("extra", torch.zeros(1))
    with pytest.raises(RuntimeError, match="weights changed after compile_decoding"):
        serve.generate(compiled, _ids(4, 0), GenerationConfig(max_new_tokens=3))


def test_the_compiled_step_writes_the_cache_in_place_not_by_scattering_copies():
    """A cache write through a view of one layer's buffer is functionalized into a scatter that rebuilds the
    whole buffer (all layers) and copies it back, once per layer: a compiled SmolLM2 step then grew with the
    cache's size (18.6 ms at 256 slots, 154 ms at 4096). The step's functional graph must hold plain index_puts
    on the buffer, and no *_scatter of it."""
    from torch._functorch.aot_autograd import aot_module_simplified

    ops: list[str] = []

    def record(gm, example_inputs):
        ops.extend(str(node.target) for node in gm.graph.nodes if node.op == "call_function")
        return gm.forward

    def backend(gm, example_inputs):
        return aot_module_simplified(gm, example_inputs, fw_compiler=record)

    torch._dynamo.reset()
    lm = _lm()
    compiled = serve.compile_decoding(lm, backend=backend)
    cache = compiled.new_cache(2, 16)
    ids = _ids(8, 0, rows=2)
    with torch.no_grad():
        compiled(ids[:, :6], cache=cache)
        stepped = compiled(ids[:, 6:7], cache=cache)
    torch._dynamo.reset()
    torch.testing.assert_close(stepped, lm(ids[:, :7])[:, 6:], atol=ATOL, rtol=0)
    assert sum("index_put" in op for op in ops) == 2 * lm.config.n_layers  # keys and values, each layer
    assert not [op for op in ops if "scatter" in op], sorted({op for op in ops if "scatter" in op})


@pytest.mark.parametrize("quantize", ["int8", "int4"])
def test_quantized_models_compile_frozen_and_step_like_eager(quantize):
    """Weight-only int8 and int4 models (bf16 activations; their CPU kernels are ATen ops Inductor calls as they
    are) through the frozen Inductor step: the eager logits within bf16 rounding (the compiled graph fuses the
    elementwise work between the products, so it rounds at other places; observed 0.03-0.04 on logits up to ~3,
    a bf16 step or two)."""
    torch._dynamo.reset()
    lm = getattr(model, f"quantize_{quantize}")(_lm(0, "mlp.hidden=192"))
    compiled = serve.compile_decoding(lm, freeze=True)
    ids = _ids(12, 5)
    cache = compiled.new_cache(1, 16)
    with torch.no_grad():
        compiled(ids[:, :4], cache=cache)
        stepped = torch.cat([compiled(ids[:, i : i + 1], cache=cache) for i in range(4, 12)], dim=1).float()
        eager = lm(ids)[:, 4:].float()
    assert (stepped - eager).abs().max() <= 2e-2 * eager.abs().max()
    torch._dynamo.reset()


def test_it_is_a_causal_lm_whose_other_calls_run_eagerly(compile_counter):
    """What is not a one-token logits step -- hidden states, a paged cache -- goes to the model as it is."""
    lm = _lm()
    compiled = serve.compile_decoding(lm, backend=compile_counter)
    ids = _ids(6, 2)
    paged = compiled.new_cache(1, 16, paged=specs.PagedSpec(block_size=4))
    assert paged.max_len == 16 and not getattr(paged, "fixed_shapes", False)
    with torch.no_grad():
        compiled(ids[:, :5], cache=paged)
        torch.testing.assert_close(compiled(ids[:, 5:], cache=paged), lm(ids)[:, 5:], atol=ATOL, rtol=0)
        fixed = compiled.new_cache(1, 16)
        compiled(ids[:, :5], cache=fixed)
        hidden = compiled(ids[:, 5:], cache=fixed, output="hidden")
    assert isinstance(hidden, specs.LMOutput) and hidden.hidden.shape == (1, 1, lm.config.d_model)
    assert compile_counter.compiles == 0 and compiled.output_head()[0] is lm.lm_head
