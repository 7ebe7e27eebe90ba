"""Hugging Face GPT-2 interop (``GPT2LMHeadModel``), checked against ``transformers`` itself on the same random
weights (fp32, eager attention; no download).

Tolerance ``TOL = 1e-5`` on logits of magnitude ~1: transformers' ``gelu_new`` is written out in Python while
ours is PyTorch's tanh-approximate GELU (the same formula), and the ``Conv1D`` matmuls reduce in another order
than ``nn.Linear``; observed differences are ~1e-6.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

import model
import specs
from model.hf import from_hf, to_hf
from model.loading import Packed
from tests.model.conftest import assert_same_model, edited_copy, load_hf, model_diff, perturb_, random_ids, tiny_hf

TOL = 1e-5
TINY = dict(n_embd=64, n_layer=2, n_head=4, n_positions=64, vocab_size=256, bos_token_id=None, eos_token_id=None)


def _hf_model(**overrides) -> torch.nn.Module:
    return tiny_hf(transformers.GPT2LMHeadModel, transformers.GPT2Config(**{**TINY, **overrides}, attn_implementation="eager"))


def _ids(seed: int = 2, batch: int = 2, seq: int = 40) -> torch.Tensor:
    return random_ids(TINY["vocab_size"], batch, seq, seed)


# ------------------------------------------------------------------------------------------------------- import

IMPORT_CASES = {
    "tied-gelu-new": {},
    "untied": dict(tie_word_embeddings=False),
    "n-inner-eps": dict(n_inner=96, layer_norm_epsilon=1e-6),
    "gelu-exact": dict(activation_function="gelu"),
    "gelu-pytorch-tanh": dict(activation_function="gelu_pytorch_tanh"),
}


@pytest.mark.parametrize("case", IMPORT_CASES)
def test_from_hf_matches_transformers(case, tmp_path):
    overrides = IMPORT_CASES[case]
    hf = _hf_model(**overrides)
    hf.save_pretrained(tmp_path, safe_serialization=True)
    ours = from_hf(tmp_path)
    cfg = ours.config
    assert not ours.training
    assert (cfg.positions, cfg.norm, cfg.norm_bias, cfg.mlp.kind) == ("learned", "layernorm", True, "gelu")
    assert cfg.mlp.gelu_approximate == ("none" if case == "gelu-exact" else "tanh")
    assert cfg.mlp_hidden == overrides.get("n_inner", 4 * TINY["n_embd"])
    tied = overrides.get("tie_word_embeddings", True)
    assert cfg.tie_embeddings == tied and (ours.lm_head.weight is ours.tok_embeddings.weight) == tied
    assert model_diff(ours, hf, _ids(), case) <= TOL


def test_full_context_and_sharded(tmp_path):
    hf = _hf_model()
    hf.save_pretrained(tmp_path, safe_serialization=True, max_shard_size="100KB")
    assert len(list(tmp_path.glob("model-*-of-*.safetensors"))) > 1
    assert model_diff(from_hf(tmp_path), hf, _ids(seq=TINY["n_positions"]), "sharded, all 64 positions") <= TOL


@pytest.mark.parametrize("fixed_shapes", [False, True])
@torch.no_grad()
def test_cached_decode_equals_full_forward_and_transformers(fixed_shapes, tmp_path):
    hf = _hf_model()
    hf.save_pretrained(tmp_path, safe_serialization=True)
    ours = from_hf(tmp_path)
    ids = _ids(seed=3, seq=30)
    cache = ours.new_cache(2, 32, fixed_shapes=fixed_shapes)
    stepped = torch.cat([ours(ids[:, :10], cache=cache), *(ours(ids[:, t : t + 1], cache=cache) for t in range(10, 30))], 1)
    diffs = ((stepped - ours(ids)).abs().max().item(), (stepped - hf(ids).logits).abs().max().item())
    print(f"decode vs forward {diffs[0]:.3e}, vs transformers {diffs[1]:.3e}")
    assert max(diffs) <= TOL


def test_base_model_checkpoint_with_mask_buffers(tmp_path):
    """The Hub's ``gpt2`` was saved from ``GPT2Model``: names without ``transformer.``, no ``lm_head``, and the
    causal-mask buffers ``attn.bias`` / ``attn.masked_bias`` of old transformers versions."""
    hf = _hf_model()
    hf.save_pretrained(tmp_path / "src", safe_serialization=True)
    tensors = {k.removeprefix("transformer."): v for k, v in load_file(tmp_path / "src" / "model.safetensors").items()}
    tensors.pop("lm_head.weight", None)
    for i in range(TINY["n_layer"]):
        tensors[f"h.{i}.attn.bias"] = torch.tril(torch.ones(1, 1, 64, 64, dtype=torch.uint8))
        tensors[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    (tmp_path / "x").mkdir()
    save_file(tensors, tmp_path / "x" / "model.safetensors", metadata={"format": "pt"})
    (tmp_path / "x" / "config.json").write_text((tmp_path / "src" / "config.json").read_text())
    assert model_diff(from_hf(tmp_path / "x"), hf, _ids(), "base-model names, mask buffers") <= TOL


def test_from_hf_then_to_hf_round_trip(tmp_path):
    hf = _hf_model(tie_word_embeddings=False, n_inner=128)
    hf.save_pretrained(tmp_path / "src", safe_serialization=True)
    ours = from_hf(tmp_path / "src")
    out = to_hf(ours, tmp_path / "out")
    source, written = load_file(tmp_path / "src" / "model.safetensors"), load_file(out / "model.safetensors")
    assert sorted(written) == sorted(source)
    for name, tensor in source.items():  # the same bytes as transformers wrote: transposes and packing undone
        assert torch.equal(written[name], tensor), name
    back = load_hf(out)
    assert model_diff(ours, back, _ids(), "round trip") <= TOL


EXPORT_CASES = {
    "gpt2-tied-tanh": [],
    "gpt2-untied-exact-gelu": ["tie_embeddings=false", "mlp.gelu_approximate=none", "mlp.hidden=320"],
}
GPT2_STYLE = ["attention.bias=true", "mlp.bias=true", "norm_bias=true", "mlp.gelu_approximate=tanh"]


@pytest.mark.parametrize("case", EXPORT_CASES)
def test_to_hf_loads_in_transformers(case, tmp_path):
    cfg = specs.apply_overrides(specs.load_config("gpt-shakespeare-char"), [*GPT2_STYLE, *EXPORT_CASES[case]])
    torch.manual_seed(0)
    ours = model.build(cfg)
    perturb_(ours, seed=4)
    ours.eval()
    out = to_hf(ours, tmp_path / "hf")
    written = json.loads((out / "config.json").read_text())
    assert written["architectures"] == ["GPT2LMHeadModel"] and written["model_type"] == "gpt2"
    assert ("lm_head.weight" in load_file(out / "model.safetensors")) == (not cfg.tie_embeddings)
    hf = load_hf(out)
    assert hf.config.tie_word_embeddings == cfg.tie_embeddings
    ids = torch.randint(0, cfg.vocab_size, (2, cfg.max_seq_len), generator=torch.Generator().manual_seed(5))
    assert model_diff(ours, hf, ids, f"to_hf {case}") <= TOL
    back = from_hf(out)
    assert_same_model(back, ours)


def test_to_hf_lists_what_neither_family_expresses(tmp_path):
    ours = model.build(specs.load_config("gpt-shakespeare-char"))  # nanoGPT style: no biases
    with pytest.raises(ValueError) as err:
        to_hf(ours, tmp_path / "hf")
    message = str(err.value)
    for reason in ("llama: positions is 'learned'", "gpt2: GPT-2 uses LayerNorm with biases", "gpt2: mlp.bias is false"):
        assert reason in message


# ------------------------------------------------------------------------------------------------------- errors


def test_packed_entry_unpacks_what_it_packs():
    q, k, v = (torch.randn(4, 3, generator=torch.Generator().manual_seed(i)) for i in range(3))
    entries = [Packed("c_attn.weight", part=i, parts=3, transposed=True) for i in range(3)]
    stored = entries[0].pack({2: v, 0: q, 1: k})  # by part number, whatever the order they arrive in
    assert stored.shape == entries[0].stored_shape(q.shape) == (3, 12)
    assert torch.equal(stored, torch.cat([q, k, v]).t())
    for entry, ours in zip(entries, (q, k, v), strict=True):
        assert torch.equal(entry.unpack(stored), ours) and entry.unpack(stored).is_contiguous()
    with pytest.raises(ValueError, match=r"c_attn.weight packs 3 of our tensors; the model has parts \[0, 2\]"):
        entries[0].pack({0: q, 2: v})


def _saved(tmp_path: Path, config_edit=None, tensors_edit=None) -> Path:
    _hf_model().save_pretrained(tmp_path / "src", safe_serialization=True)
    return edited_copy(tmp_path / "src", tmp_path / "x", config_edit, tensors_edit)


def test_unsupported_settings_are_all_named(tmp_path):
    def edit(config):
        config.update(
            activation_function="relu",
            scale_attn_by_inverse_layer_idx=True,
            reorder_and_upcast_attn=True,
            scale_attn_weights=False,
            embd_pdrop=0.0,
        )

    with pytest.raises(specs.CheckpointError) as err:
        from_hf(_saved(tmp_path, config_edit=edit))
    message = str(err.value)
    for needle in (
        "activation_function 'relu' is not supported; supported: gelu_new, gelu_pytorch_tanh, gelu",
        "scale_attn_by_inverse_layer_idx is true",
        "reorder_and_upcast_attn is true",
        "scale_attn_weights is false",
        "embd_pdrop (0.0) differs from resid_pdrop (0.1)",
    ):
        assert needle in message


def test_misshapen_packed_tensor_is_named_with_its_stored_shape(tmp_path):
    def edit(tensors):
        tensors["transformer.h.0.attn.c_attn.weight"] = torch.zeros(192, 64)  # nn.Linear layout: not Conv1D's
        del tensors["transformer.h.1.mlp.c_fc.bias"]

    with pytest.raises(specs.CheckpointError) as err:
        from_hf(_saved(tmp_path, tensors_edit=edit))
    assert sorted(err.value.problems) == [
        "missing tensor 'transformer.h.1.mlp.c_fc.bias' (shape [256]): not in model.safetensors",
        "model.safetensors: tensor 'transformer.h.0.attn.c_attn.weight' has shape [192, 64], the model built "
        "from config.json (GPT2LMHeadModel) expects [64, 192]",
    ]
