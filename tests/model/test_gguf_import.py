"""GGUF import on small files written here (``tests/gguf_files.py``): the Q/K row order, the metadata mapping and
every refusal, each checked against a Hugging Face Llama and against ``transformers``' own GGUF loader reading
the same file.

Tolerance: float32 throughout. Against the Hugging Face model the file was written from (F32 tensors, exact) our
logits differ by reduction order only (~5e-7 observed); against transformers' GGUF loader on a quantized file
both dequantize the same blocks with the same ``gguf`` code, so the weights are identical and the logits again
differ by reduction order only. ``TOL = 1e-5``.
"""

from __future__ import annotations

import gguf
import numpy as np
import pytest
import torch
import transformers

import model
from model.gguf_llama import from_interleaved, to_interleaved
from tests.gguf_files import byte_level_vocab, interleaved_rows, llama_metadata, llama_tensors, write_gguf

TOL = 1e-5
Q = gguf.GGMLQuantizationType
TINY = dict(
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=96,
    vocab_size=257,  # 256 byte symbols + <|endoftext|>
    max_position_embeddings=128,
)


def _hf(**overrides) -> torch.nn.Module:
    cfg = transformers.LlamaConfig(**{**TINY, **overrides}, attn_implementation="eager")
    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM(cfg).to(torch.float32)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    return hf.eval()


def _write(path, hf, *, qtypes=None, metadata=None, tensors=None):
    tensors = tensors if tensors is not None else llama_tensors(hf)
    return write_gguf(
        path,
        metadata={**llama_metadata(hf.config), **(metadata or {})},
        tensors=tensors,
        qtypes=qtypes,
        tokenizer=byte_level_vocab(),
    )


def _transformers_gguf(file) -> torch.nn.Module:
    return transformers.AutoModelForCausalLM.from_pretrained(
        file.parent, gguf_file=file.name, dtype=torch.float32, attn_implementation="eager"
    ).eval()


def _ids(batch: int = 2, seq: int = 16) -> torch.Tensor:
    return torch.randint(0, TINY["vocab_size"], (batch, seq), generator=torch.Generator().manual_seed(2))


@torch.no_grad()
def _diff(a: torch.nn.Module, b: torch.nn.Module, label: str) -> float:
    ids = _ids()
    diff = (a(ids) - b(ids).logits).abs().max().item()
    print(f"{label}: max abs logit diff {diff:.3e}")
    return diff


# ----------------------------------------------------------------------------------------------- Q/K row order


@pytest.mark.parametrize(("n_heads", "head_dim", "cols"), [(1, 2, 3), (4, 8, 5), (3, 64, 1), (9, 64, 576)])
def test_row_order_is_the_converters_and_undoing_it_is_the_identity(n_heads, head_dim, cols):
    w = torch.randn(n_heads * head_dim, cols)
    assert torch.equal(to_interleaved(w, n_heads), w[interleaved_rows(n_heads, head_dim)])
    assert torch.equal(from_interleaved(to_interleaved(w, n_heads), n_heads), w)
    assert torch.equal(to_interleaved(from_interleaved(w, n_heads), n_heads), w)
    bias = torch.randn(n_heads * head_dim)  # q/k biases are reordered the same way
    assert torch.equal(from_interleaved(to_interleaved(bias, n_heads), n_heads), bias)


def test_interleaved_rows_rotated_in_adjacent_pairs_give_the_same_attention_scores():
    """What the reorder is for: llama.cpp rotates pairs (2i, 2i+1) of the reordered rows; we rotate (i, i + D/2) of
    the original ones. Both give the same q.k for every pair of positions."""
    heads, dim, positions = 2, 8, torch.arange(6.0)
    wq, wk, x = torch.randn(heads * dim, 16), torch.randn(heads * dim, 16), torch.randn(6, 16)
    freq = 10000.0 ** (-torch.arange(0, dim, 2) / dim)  # (D/2,)
    angle = positions[:, None] * freq  # (T, D/2)
    cos, sin = angle.cos(), angle.sin()

    def halves(t):  # (T, H, D): rotate (i, i + D/2)
        a, b = t[..., : dim // 2], t[..., dim // 2 :]
        return torch.cat([a * cos[:, None] - b * sin[:, None], b * cos[:, None] + a * sin[:, None]], dim=-1)

    def pairs(t):  # (T, H, D): rotate (2i, 2i + 1)
        a, b = t[..., 0::2], t[..., 1::2]
        return torch.stack([a * cos[:, None] - b * sin[:, None], b * cos[:, None] + a * sin[:, None]], dim=-1).flatten(-2)

    def scores(q, k):
        return torch.einsum("thd,shd->hts", q, k)

    ours = scores(halves((x @ wq.T).view(6, heads, dim)), halves((x @ wk.T).view(6, heads, dim)))
    wq_cpp, wk_cpp = to_interleaved(wq, heads), to_interleaved(wk, heads)
    cpp = scores(pairs((x @ wq_cpp.T).view(6, heads, dim)), pairs((x @ wk_cpp.T).view(6, heads, dim)))
    torch.testing.assert_close(ours, cpp, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(ours, scores(pairs((x @ wq.T).view(6, heads, dim)), pairs((x @ wk.T).view(6, heads, dim))))


# ----------------------------------------------------------------------------------------------------- import

CASES = {
    "gqa": dict(num_key_value_heads=2),
    "mha-tied": dict(num_key_value_heads=4, tie_word_embeddings=True),
    "mqa": dict(num_key_value_heads=1),
    "attention-bias": dict(num_key_value_heads=2, attention_bias=True),
}


@pytest.mark.parametrize("case", CASES)
def test_f32_file_matches_the_model_it_was_written_from_and_transformers_reading_it(case, tmp_path):
    hf = _hf(**CASES[case])
    file = _write(tmp_path / "tiny.gguf", hf)
    ours = model.from_gguf(file)
    assert not ours.training
    assert ours.config.name == "tiny-llama"
    assert ours.config.tie_embeddings == CASES[case].get("tie_word_embeddings", False)
    assert (ours.lm_head.weight is ours.tok_embeddings.weight) == ours.config.tie_embeddings
    assert ours.config.attention.kv_heads == CASES[case]["num_key_value_heads"]
    assert _diff(ours, hf, f"{case} vs the original") <= TOL
    if case != "attention-bias":  # transformers' GGUF loader builds Llama without q/k/v biases (and drops them)
        assert _diff(ours, _transformers_gguf(file), f"{case} vs transformers' GGUF loader") <= TOL


@pytest.mark.parametrize("qtype", [Q.Q8_0, Q.Q4_1, Q.Q4_0, Q.Q5_1, Q.F16, Q.BF16], ids=lambda q: q.name)
def test_quantized_file_matches_transformers_reading_it(qtype, tmp_path):
    hf = _hf(num_key_value_heads=2)
    tensors = llama_tensors(hf)
    qtypes = {name: qtype for name, array in tensors.items() if array.ndim == 2}
    file = _write(tmp_path / "tiny.gguf", hf, qtypes=qtypes)
    ours = model.from_gguf(file)
    assert _diff(ours, _transformers_gguf(file), f"{qtype.name} vs transformers' GGUF loader") <= TOL
    if qtype != Q.F16:  # the quantization is real: the original model differs
        assert _diff(ours, hf, f"{qtype.name} vs the float original") > 1e-3


def test_dtype_device_and_metadata(tmp_path):
    hf = _hf(num_key_value_heads=2, rms_norm_eps=1e-5, rope_parameters={"rope_type": "default", "rope_theta": 5e5})
    ours = model.from_gguf(_write(tmp_path / "tiny.gguf", hf), dtype=torch.bfloat16, device="cpu")
    cfg = ours.config
    assert cfg.dtype == "bfloat16" and {p.dtype for p in ours.parameters()} == {torch.bfloat16}
    assert (cfg.rope.theta, cfg.norm_eps, cfg.max_seq_len, cfg.vocab_size) == (5e5, pytest.approx(1e-5), 128, 257)
    assert (cfg.d_model, cfg.n_layers, cfg.mlp.hidden, cfg.attention.n_heads) == (64, 2, 96, 4)


def test_linear_rope_scaling_is_read(tmp_path):
    hf = _hf(num_key_value_heads=2, rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0})
    file = _write(tmp_path / "tiny.gguf", hf, metadata={"rope.scaling.type": "linear", "rope.scaling.factor": 2.0})
    ours = model.from_gguf(file)
    assert (ours.config.rope.scaling, ours.config.rope.factor) == ("linear", 2.0)
    assert _diff(ours, hf, "linear rope scaling vs the original") <= TOL


# ----------------------------------------------------------------------------------------------------- errors


@pytest.fixture(scope="module")
def hf_tiny() -> torch.nn.Module:
    return _hf(num_key_value_heads=2)


def test_another_architecture_is_refused_by_name(tmp_path):
    file = write_gguf(tmp_path / "q.gguf", arch="qwen2", metadata={"block_count": 2})
    with pytest.raises(model.CheckpointError, match=r"general.architecture is 'qwen2'; supported GGUF architectures: llama"):
        model.from_gguf(file)


def test_every_problem_is_named_before_anything_is_dequantized(tmp_path, hf_tiny):
    tensors = llama_tensors(hf_tiny)
    del tensors["blk.1.ffn_up.weight"]
    tensors["blk.0.ffn_down.weight"] = tensors["blk.0.ffn_down.weight"][:, :32]
    tensors["blk.0.extra.weight"] = np.zeros(4, dtype=np.float32)
    file = _write(tmp_path / "bad.gguf", hf_tiny, tensors=tensors)
    with pytest.raises(model.CheckpointError) as err:
        model.from_gguf(file)
    problems = err.value.problems
    assert any("missing tensor 'blk.1.ffn_up.weight'" in p for p in problems)
    assert any("'blk.0.ffn_down.weight' has shape [64, 32]" in p and "expects [64, 96]" in p for p in problems)
    assert any("unexpected tensor 'blk.0.extra.weight'" in p for p in problems)
    assert len(problems) == 3, problems


def test_a_quantization_the_package_cannot_dequantize_is_named(tmp_path, hf_tiny):
    tensors = llama_tensors(hf_tiny)
    rows, cols = tensors.pop("blk.0.attn_v.weight").shape
    block, size = gguf.GGML_QUANT_SIZES[Q.Q8_1]  # Q8_1 has no (de)quantizer in the gguf package: written raw
    raw = {"blk.0.attn_v.weight": (np.zeros((rows, cols // block * size), dtype=np.uint8), Q.Q8_1)}
    file = write_gguf(
        tmp_path / "q81.gguf", metadata=llama_metadata(hf_tiny.config), tensors=tensors, raw=raw, tokenizer=byte_level_vocab()
    )
    with pytest.raises(model.CheckpointError, match=r"'blk.0.attn_v.weight' is Q8_1, which the gguf package cannot dequantize"):
        model.from_gguf(file)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m, t: m.pop("block_count"), "metadata lacks 'llama.block_count'"),
        (lambda m, t: m.update({"expert_count": 8}), "mixture-of-experts is not supported"),
        (lambda m, t: m.update({"rope.dimension_count": 8}), "partial_rotary_factor"),
        (lambda m, t: m.update({"vocab_size": 300}), "llama.vocab_size is 300, but the token list holds 257 tokens"),
        (lambda m, t: t.update({"rope_freqs.weight": np.ones(8, np.float32)}), "per-frequency RoPE factors"),
        (lambda m, t: m.update({"rope.scaling.type": "longrope", "rope.scaling.factor": 4.0}), "'longrope'"),
    ],
    ids=["missing-key", "moe", "partial-rotary", "vocab-size", "rope-freqs", "rope-scaling"],
)
def test_metadata_we_cannot_build_is_refused(tmp_path, hf_tiny, edit, message):
    metadata, tensors = llama_metadata(hf_tiny.config), llama_tensors(hf_tiny)
    edit(metadata, tensors)
    file = write_gguf(tmp_path / "m.gguf", metadata=metadata, tensors=tensors, tokenizer=byte_level_vocab())
    with pytest.raises(model.CheckpointError, match=message):
        model.from_gguf(file)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(model.CheckpointError, match="no such GGUF file"):
        model.from_gguf(tmp_path / "nothing.gguf")
    (tmp_path / "junk.gguf").write_bytes(b"not a gguf file at all")
    with pytest.raises(model.CheckpointError, match="not a readable GGUF file"):
        model.from_gguf(tmp_path / "junk.gguf")
