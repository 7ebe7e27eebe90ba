"""Llama checkpoints with scaled RoPE (linear, dynamic NTK, llama3, YaRN) against ``transformers`` itself, on
sequences that go past the original context (fp32, eager attention).

Tolerance ``TOL = 1e-5`` on logits of magnitude ~1 (as in test_hf_llama.py): the RoPE tables agree with
transformers' bit for bit (tests/tensor/test_rope_scaling.py), so what is left is the reduction order of the
matmuls; observed differences are ~1e-6.

Dynamic NTK grows the base with the current length, so a cached decode cannot equal a full forward past the
original context in any implementation that caches rotated keys: keys written at length ``n`` keep the
rotation of length ``n``, while a full forward of ``L`` tokens rotates every key with length ``L``. We do what
transformers does (the length of a forward is its largest position + 1, per row here), so our cached decode
equals transformers' cached decode step for step, our full forward equals its full forward, and a cached
decode equals the full forward while the sequence stays within the original context. All three are tested,
and so is the divergence past it (so the documentation cannot go stale).
"""

from __future__ import annotations

import json

import pytest
import torch
import transformers

import model
import specs
from model.hf import from_hf, to_hf
from tests.model.conftest import TINY_LLAMA, assert_same_model, logit_diff, perturb_, random_ids, tiny_hf

TOL = 1e-5
TINY = dict(**TINY_LLAMA, num_key_value_heads=2)

# name -> (max_position_embeddings, rope_parameters, original context, sequence length past it)
CASES = {
    # original 64 with head dim 16: wavelength 2 pi is kept, 21 blended, 70 and up interpolated
    "llama3": (256, dict(rope_type="llama3", factor=4.0, low_freq_factor=1.0, high_freq_factor=4.0,
                         original_max_position_embeddings=64), 64, 80),
    "yarn": (128, dict(rope_type="yarn", factor=4.0, original_max_position_embeddings=32), 32, 80),
    "yarn-betas-attention": (128, dict(rope_type="yarn", factor=4.0, original_max_position_embeddings=32,
                                       beta_fast=16.0, beta_slow=2.0, attention_factor=1.25), 32, 80),
    "yarn-mscale": (64, dict(rope_type="yarn", factor=2.0, original_max_position_embeddings=32, mscale=1.0,
                             mscale_all_dim=0.5), 32, 60),
    "dynamic": (32, dict(rope_type="dynamic", factor=2.0), 32, 56),
    # linear has no original context in its settings: configs give the stretched one as max_position_embeddings
    "linear": (64, dict(rope_type="linear", factor=2.0), 32, 56),
}


def _hf_model(case: str) -> torch.nn.Module:
    max_positions, rope, _, _ = CASES[case]
    cfg = transformers.LlamaConfig(
        **TINY,
        max_position_embeddings=max_positions,
        rope_parameters={"rope_theta": 10000.0, **rope},
        attn_implementation="eager",
    )
    return tiny_hf(transformers.LlamaForCausalLM, cfg)


def _ids(length: int, batch: int = 2, seed: int = 2) -> torch.Tensor:
    return random_ids(TINY["vocab_size"], batch, length, seed)


@pytest.fixture(scope="module")
def imported(tmp_path_factory) -> dict[str, tuple[torch.nn.Module, torch.nn.Module]]:
    """Per case: (transformers model, ours imported from its saved directory)."""
    pairs = {}
    for case in CASES:
        path = tmp_path_factory.mktemp(case)
        hf = _hf_model(case)
        hf.save_pretrained(path, safe_serialization=True)
        pairs[case] = (hf, from_hf(path))
    return pairs


@pytest.mark.parametrize("case", CASES)
@torch.no_grad()
def test_logits_match_transformers_past_the_original_context(case, imported):
    hf, ours = imported[case]
    _, rope, original, length = CASES[case]
    assert length > original
    expected_scaling = {"dynamic": "dynamic", "linear": "linear", "llama3": "llama3"}.get(rope["rope_type"], "yarn")
    assert ours.config.rope.scaling == expected_scaling
    if expected_scaling in ("dynamic", "llama3", "yarn"):
        assert ours.config.rope.original_max_seq_len == original
    assert ours.config.max_seq_len >= length
    ids = _ids(length)
    # A fresh forward: transformers' dynamic NTK keeps the largest length it has seen until a shorter-than-
    # original one resets it, so each comparison starts from a sequence within the original context.
    hf(ids[:, :4])
    assert logit_diff(ours(ids), hf(ids).logits, f"{case} L={length}") <= TOL


@pytest.mark.parametrize("case", [c for c in CASES if c != "dynamic"])
@torch.no_grad()
def test_cached_decode_equals_full_forward(case, imported):
    hf, ours = imported[case]
    length = CASES[case][3]
    ids = _ids(length, seed=3)
    full = ours(ids)
    cache = ours.new_cache(2, length)
    stepped = torch.cat([ours(ids[:, :20], cache=cache), *(ours(ids[:, t : t + 1], cache=cache) for t in range(20, length))], 1)
    assert logit_diff(stepped, full, f"{case} decode vs forward") <= TOL
    assert logit_diff(stepped, hf(ids).logits, f"{case} decode vs transformers") <= TOL


def _hf_cached(hf: torch.nn.Module, ids: torch.Tensor, prefill: int) -> torch.Tensor:
    cache = transformers.DynamicCache(config=hf.config)
    steps = [hf(ids[:, :prefill], cache=cache, use_cache=True).logits]
    steps += [hf(ids[:, t : t + 1], cache=cache, use_cache=True).logits for t in range(prefill, ids.shape[1])]
    return torch.cat(steps, dim=1)


@pytest.mark.parametrize("fixed_shapes", [False, True])
@torch.no_grad()
def test_dynamic_cached_decode_equals_transformers_cached_decode(imported, fixed_shapes):
    hf, ours = imported["dynamic"]
    ids = _ids(56, seed=4)
    cache = ours.new_cache(2, 56, fixed_shapes=fixed_shapes)
    stepped = torch.cat([ours(ids[:, :8], cache=cache), *(ours(ids[:, t : t + 1], cache=cache) for t in range(8, 56))], 1)
    assert logit_diff(stepped, _hf_cached(hf, ids, prefill=8), "dynamic cached decode vs transformers cached") <= TOL


@torch.no_grad()
def test_dynamic_decode_equals_forward_within_the_original_context_only(imported):
    _, ours = imported["dynamic"]
    original = CASES["dynamic"][2]
    ids = _ids(56, seed=5)
    cache = ours.new_cache(2, 56)
    stepped = torch.cat([ours(ids[:, :8], cache=cache), *(ours(ids[:, t : t + 1], cache=cache) for t in range(8, 56))], 1)
    within = ours(ids[:, :original])
    assert logit_diff(stepped[:, :original], within, "dynamic decode vs forward, within the original context") <= TOL
    # Past it, the full forward rotates every key with the final length; the cache holds older rotations.
    assert (stepped[:, original:] - ours(ids)[:, original:]).abs().max() > 1e-3
    # A prefill that already goes past the original context is one forward: it equals the full forward.
    cache = ours.new_cache(2, 56)
    assert logit_diff(ours(ids[:, :40], cache=cache), ours(ids[:, :40]), "dynamic long prefill") <= TOL


@torch.no_grad()
def test_dynamic_length_is_per_row(imported):
    """Each row's base grows with its own length: a short row beside a long one gets its unbatched logits
    (transformers takes the batch's largest position for every row)."""
    _, ours = imported["dynamic"]
    long, short = _ids(50, batch=1, seed=6), _ids(20, batch=1, seed=7)
    batch = torch.cat([long, torch.cat([short, torch.zeros(1, 30, dtype=torch.int64)], dim=1)])
    positions = torch.stack([torch.arange(50), torch.cat([torch.arange(20), torch.full((30,), 19)])])
    out = ours(batch, positions=positions)
    assert logit_diff(out[0], ours(long)[0], "long row") <= TOL
    assert logit_diff(out[1, :20], ours(short)[0], "short row beside it") <= TOL


@pytest.mark.parametrize("case", ["dynamic", "yarn", "llama3"])
@torch.no_grad()
def test_scaled_rope_compiles_as_one_graph(case, imported):
    """The length-dependent base is computed on the device: no graph break in a forward or in a fixed-shape
    decode step, and the compiled steps equal the eager ones."""
    _, ours = imported[case]
    ids = _ids(40, seed=8)

    def decode(step_fn, cache) -> torch.Tensor:
        ours(ids[:, :30], cache=cache)
        return torch.cat([step_fn(ids[:, t : t + 1], cache) for t in range(30, 40)], dim=1)

    torch._dynamo.reset()
    try:
        compiled = torch.compile(ours, backend="eager", fullgraph=True)
        torch.testing.assert_close(compiled(ids), ours(ids), atol=TOL, rtol=0)
        step = torch.compile(lambda token, cache: ours(token, cache=cache), backend="eager", fullgraph=True)
        stepped = decode(step, ours.new_cache(2, 48, fixed_shapes=True))
    finally:
        torch._dynamo.reset()
    eager = decode(lambda token, cache: ours(token, cache=cache), ours.new_cache(2, 48, fixed_shapes=True))
    torch.testing.assert_close(stepped, eager, atol=TOL, rtol=0)


# ------------------------------------------------------------------------------------------------------- export

EXPORTS = {
    "llama3": ["rope.scaling=llama3", "rope.factor=4.0", "rope.original_max_seq_len=32", "rope.theta=500000.0"],
    "yarn": [
        "rope.scaling=yarn",
        "rope.factor=4.0",
        "rope.original_max_seq_len=32",
        "rope.beta_fast=16.0",
        "rope.beta_slow=2.0",
        "rope.attention_factor=1.2",
    ],
    "dynamic": ["rope.scaling=dynamic", "rope.factor=2.0", "rope.original_max_seq_len=64"],
}


@pytest.mark.parametrize("case", EXPORTS)
def test_to_hf_with_scaled_rope_loads_in_transformers_and_back(case, tmp_path):
    cfg = specs.apply_overrides(specs.load_config("llama-tiny"), EXPORTS[case])
    torch.manual_seed(0)
    ours = model.build(cfg).eval()
    perturb_(ours, seed=4)
    out = to_hf(ours, tmp_path / "hf")
    hf = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, attn_implementation="eager").eval()
    assert hf.config.rope_parameters["rope_type"] == case
    ids = _ids(100, seed=9)
    with torch.no_grad():
        assert logit_diff(ours(ids), hf(ids).logits, f"to_hf {case} L=100") <= TOL
    back = from_hf(out)
    assert_same_model(back, ours)


@torch.no_grad()
def test_static_ntk_is_the_unscaled_model_with_the_grown_base():
    """transformers has no static NTK to compare with; by definition it is a larger base (head dim 16)."""
    def build(*overrides: str) -> torch.nn.Module:
        torch.manual_seed(0)
        return model.build(specs.apply_overrides(specs.load_config("llama-tiny"), list(overrides))).eval()

    ntk = build("rope.scaling=ntk", "rope.factor=4.0")
    grown = build(f"rope.theta={10000.0 * 4.0 ** (16 / 14)!r}")
    ids = _ids(100, seed=10)
    assert logit_diff(ntk(ids), grown(ids), "ntk vs grown base") <= TOL
    assert (ntk(ids) - build()(ids)).abs().max() > 1e-3  # and the scaling does move the logits


def test_to_hf_refuses_static_ntk(tmp_path):
    cfg = specs.apply_overrides(specs.load_config("llama-tiny"), ["rope.scaling=ntk", "rope.factor=2.0"])
    with pytest.raises(ValueError, match="static NTK"):
        to_hf(model.build(cfg), tmp_path / "hf")


def test_real_llama_3_1_config_imports(tmp_path):
    """The rope settings every Llama 3.1 checkpoint has (4.x dialect), on a tiny model."""
    hf = _hf_model("llama3")
    hf.save_pretrained(tmp_path, safe_serialization=True)
    config = json.loads((tmp_path / "config.json").read_text())
    config.pop("rope_parameters")
    config.update(
        rope_theta=500000.0,
        max_position_embeddings=131072,
        rope_scaling={"factor": 8.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                      "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    )
    (tmp_path / "config.json").write_text(json.dumps(config))
    rope = from_hf(tmp_path).config.rope
    assert (rope.scaling, rope.theta, rope.factor, rope.original_max_seq_len) == ("llama3", 500000.0, 8.0, 8192)
    assert (rope.low_freq_factor, rope.high_freq_factor) == (1.0, 4.0)
