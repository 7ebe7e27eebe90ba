"""ONNX export: the graph passes onnx.checker, and onnxruntime's prefill plus cached decode steps give PyTorch's
full-forward logits (fp32, within 1e-4) at dynamic batch and sequence sizes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import export
import specs
from export.onnx_export import run_session
from tests.export.conftest import tiny_lm

ATOL = 1e-4  # the bar for fp32; observed differences are ~2e-7 (ONNX Runtime's own matmul/softmax order)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path]:
    lm = tiny_lm()
    out = export.export_onnx(lm, tmp_path_factory.mktemp("onnx") / "exported")
    return lm, out


def test_graph_is_valid_onnx_with_named_dynamic_inputs(exported: tuple[torch.nn.Module, Path]) -> None:
    _, out = exported
    graph = onnx.load(str(out / "model.onnx"))
    onnx.checker.check_model(graph, full_check=True)
    inputs = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.graph.input}
    assert list(inputs) == ["input_ids", *export.past_names(2)]
    assert inputs["input_ids"] == ["batch", "seq"]
    assert inputs["past_key_values.0.key"] == ["batch", 2, "past", 16]
    assert [o.name for o in graph.graph.output] == ["logits", *export.present_names(2)]


@pytest.mark.parametrize(("batch", "prompt", "steps"), [(2, 6, 4), (1, 1, 3), (3, 11, 2)])
def test_prefill_then_decode_in_onnxruntime_equals_pytorch(
    exported: tuple[torch.nn.Module, Path], batch: int, prompt: int, steps: int
) -> None:
    lm, out = exported
    cfg = lm.config
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    ids = torch.randint(0, cfg.vocab_size, (batch, prompt + steps), generator=torch.Generator().manual_seed(batch))
    with torch.no_grad():
        want = lm(ids).numpy()
    past = export.empty_past(cfg, batch)
    got = run_session(session, ids[:, :prompt], past)  # prefill: past of length 0
    assert np.abs(got[0] - want[:, :prompt]).max() < ATOL
    for t in range(prompt, prompt + steps):  # one token at a time, feeding back the presents
        past = [torch.from_numpy(a) for a in got[1:]]
        assert past[0].shape == (batch, cfg.attention.kv_heads, t, cfg.head_dim)
        got = run_session(session, ids[:, t : t + 1], past)
        assert np.abs(got[0][:, 0] - want[:, t]).max() < ATOL, f"decode step at position {t}"


def test_card_lists_what_was_written(exported: tuple[torch.nn.Module, Path]) -> None:
    _, out = exported
    card = specs.from_dict(json.loads((out / "modelcard.json").read_text()), kind="modelcard")
    assert {ref.path for ref in card.files} == {"model.onnx", "config.json"}
    for ref in card.files:
        assert specs.manifest.hash_file(out / ref.path) == (ref.size, ref.sha256)
    assert 0 <= card.metrics["onnx_max_abs_diff"] < ATOL
    assert card.parameters == specs.parameter_count(card_config(out))
    assert specs.verify_manifest(out) == []
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")], "no staging directory left behind"


def card_config(out: Path) -> specs.ModelConfig:
    return specs.load_config(out / "config.json", kind="model")


def test_refuses_a_directory_of_other_files(tmp_path: Path) -> None:
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    lm = tiny_lm()
    with pytest.raises(FileExistsError, match="other files"):
        export.export_onnx(lm, tmp_path / "busy")
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"
