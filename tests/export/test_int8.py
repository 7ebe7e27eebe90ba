"""int8 export: a checkpoint model.load_checkpoint reads back as the int8 model (exactly), measured against the
float model (size, perplexity on held-out tinyshakespeare, decode speed), refusing layers it cannot quantize."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import export
import model
import specs
from data import TINYSHAKESPEARE
from export.int8 import perplexity
from tests.export.conftest import tiny_lm


def held_out(n: int = 512) -> torch.Tensor:
    """Bytes of the last 10% of tinyshakespeare (nanoGPT's validation split), as ids of a 256-token vocabulary."""
    text = TINYSHAKESPEARE.read_bytes()
    return torch.tensor(list(text[int(0.9 * len(text)) :][:n]), dtype=torch.long)


@pytest.mark.parametrize("tie", [False, True])
def test_int8_checkpoint_loads_as_the_quantized_model(tmp_path: Path, tie: bool) -> None:
    lm = tiny_lm(seed=2, tie_embeddings=tie)
    out, report = export.export_int8(lm, tmp_path / "int8", quantize=model.quantize_int8, eval_ids=held_out(),
                                     decode_steps=4)
    assert model.verify_checkpoint(out) == []
    loaded = model.load_checkpoint(out)
    reference = model.quantize_int8(copy.deepcopy(lm))
    ids = torch.randint(0, 256, (2, 13), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded(ids), reference(ids))  # the same int8 weights and scales, bit for bit
    assert isinstance(loaded.layers[0].attn.wq, model.Int8Linear)
    cache, reference_cache = loaded.new_cache(2, 20), reference.new_cache(2, 20)
    with torch.no_grad():  # a decode step: 2 rows take the fused int8 kernel (a prompt takes the dequantized GEMM)
        loaded(ids, cache=cache), reference(ids, cache=reference_cache)
        assert torch.equal(loaded(ids[:, :1], cache=cache), reference(ids[:, :1], cache=reference_cache))
    # weights: int8 linears (1 byte + a scale per row) vs float32; the embedding table stays bf16 (2 bytes)
    assert report.int8_bytes < 0.45 * report.float_bytes
    assert report.ppl_float is not None and report.ppl_int8 is not None
    assert abs(report.ppl_int8 - report.ppl_float) < 0.01 * report.ppl_float  # random weights: ppl ~ vocab
    card = json.loads((out / "modelcard.json").read_text())
    assert card["dtype"] == "int8" and card["metrics"]["ppl_delta"] == pytest.approx(report.ppl_int8 - report.ppl_float)
    assert {f["path"] for f in card["files"]} == {"model.safetensors", "quantization.json", "config.json"}


def test_loading_int8_in_another_dtype_is_refused(tmp_path: Path) -> None:
    out, _ = export.export_int8(tiny_lm(), tmp_path / "int8", quantize=model.quantize_int8, decode_steps=2)
    with pytest.raises(specs.CheckpointError, match="computes in bfloat16"):
        model.load_checkpoint(out, dtype=torch.float32)


def test_perplexity_is_the_exponential_of_the_mean_cross_entropy() -> None:
    lm = tiny_lm(seed=3)
    ids = held_out(300)
    with torch.no_grad():  # windows of 128 (max_seq_len), each predicting its next 128 tokens
        losses = [F.cross_entropy(lm(ids[s : s + 128][None])[0], ids[s + 1 : s + 129], reduction="sum")
                  for s in range(0, 256, 128)]
        last = F.cross_entropy(lm(ids[256:299][None])[0], ids[257:300], reduction="sum")
    want = math.exp(float(sum(losses) + last) / 299)
    assert perplexity(lm, ids) == pytest.approx(want, rel=1e-6)


def test_layers_that_are_not_linears_are_refused_with_their_names(tmp_path: Path) -> None:
    moe = specs.MoEConfig(n_experts=4, top_k=2, expert_hidden=32)
    lm = tiny_lm(moe=moe)
    with pytest.raises(ValueError, match=r"(?s)cannot quantize 2 layer\(s\).*layers\.0\.mlp\.experts: SwiGLUExperts") as caught:
        export.export_int8(lm, tmp_path / "refused", quantize=model.quantize_int8)
    assert "keep_float" in str(caught.value)
    assert not (tmp_path / "refused").exists()
    out, report = export.export_int8(lm, tmp_path / "kept", quantize=model.quantize_int8, keep_float=True,
                                     decode_steps=2)
    assert set(report.kept) == {"layers.0.mlp.experts", "layers.1.mlp.experts"}
    assert json.loads((out / "quantization.json").read_text())["kept"] == report.kept
    loaded = model.load_checkpoint(out)
    ids = torch.randint(0, 256, (1, 7), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(loaded(ids), model.quantize_int8(copy.deepcopy(lm))(ids))


def test_overwrite_replaces_an_export_of_ours_and_leaves_no_temporaries(tmp_path: Path) -> None:
    first, _ = export.export_int8(tiny_lm(seed=6), tmp_path / "int8", quantize=model.quantize_int8, decode_steps=2)
    before = (first / "model.safetensors").read_bytes()
    with pytest.raises(FileExistsError, match="already holds an export"):
        export.export_int8(tiny_lm(seed=7), first, quantize=model.quantize_int8, decode_steps=2)
    export.export_int8(tiny_lm(seed=7), first, quantize=model.quantize_int8, decode_steps=2, overwrite=True)
    assert (first / "model.safetensors").read_bytes() != before and model.verify_checkpoint(first) == []
    assert [p.name for p in tmp_path.iterdir()] == ["int8"]


def test_an_export_passes_the_governance_release_gate(tmp_path: Path) -> None:
    """The export's card and manifest are what governance releases: a signed release verifies, and the released
    int8 directory still loads."""
    import governance

    out, _ = export.export_int8(tiny_lm(seed=8), tmp_path / "int8", quantize=model.quantize_int8, decode_steps=2)
    private, public = governance.keygen(tmp_path / "release.pem")
    assert governance.release(out, key=private) == []
    assert governance.verify_release(out, trusted_key=public) == []
    assert isinstance(model.load_checkpoint(out).lm_head, model.Int8Linear)
