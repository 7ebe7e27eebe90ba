"""``lmplanes export pt2|int8|hf|modelpack|unpack`` in-process through ``main`` (ONNX itself is tested in
tests/export; here only its refusal path, which exports nothing)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import data
import model
import specs
from pack.cli import main
from tests.export.conftest import tiny_lm


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tokenizer = data.byte_tokenizer()
    # 257 tokens: the byte tokenizer's 256 bytes and its end-of-sequence token
    return model.save_checkpoint(tiny_lm(seed=5, vocab_size=257), tmp_path_factory.mktemp("ckpt") / "tiny",
                                 card_fields={"tokenizer": "tokenizer.json"}, extra=tokenizer.save)


def _card(out: Path) -> dict:
    return json.loads((out / "modelcard.json").read_text())


def test_export_int8_writes_a_servable_checkpoint_with_its_measurements(ckpt: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "int8"
    assert main(["export", "int8", "--checkpoint", str(ckpt), "--out", str(out), "--eval-tokens", "600"]) == 0
    printed = capsys.readouterr().out
    assert "perplexity on 600 held-out tokens" in printed and "tokens/s" in printed
    card = _card(out)
    assert card["parents"] == [specs.read_manifest(ckpt)["content_id"]]
    assert card["tokenizer"] == "tokenizer.json"
    assert {f["path"] for f in card["files"]} >= {"tokenizer.json", "model.safetensors", "quantization.json"}
    assert {"ppl_float", "ppl_int8", "ppl_delta", "int8_size_ratio"} <= set(card["metrics"])
    assert main(["checkpoint", "verify", str(out)]) == 0
    assert isinstance(model.load_checkpoint(out).lm_head, model.Int8Linear)
    capsys.readouterr()
    assert main(["generate", "--checkpoint", str(out), "--prompt", "ROMEO:", "--max-new-tokens", "3"]) == 0
    assert "3 tokens in" in capsys.readouterr().err  # served as it is: the int8 checkpoint carries its tokenizer


def test_export_int8_refuses_unquantizable_layers_in_one_line(tmp_path: Path, capsys) -> None:
    moe = model.save_checkpoint(tiny_lm(moe=specs.MoEConfig(n_experts=4, top_k=2, expert_hidden=32)), tmp_path / "moe")
    assert main(["export", "int8", "--checkpoint", str(moe), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lmplanes: error: export failed: cannot quantize 2 layer(s)")
    assert "layers.0.mlp.experts" in err[0] and not (tmp_path / "out").exists()


@pytest.mark.slow  # a second pt2 export (~7 s); tests/export/test_pt2.py covers the programs themselves
def test_export_pt2(ckpt: Path, tmp_path: Path) -> None:
    assert main(["export", "pt2", "--checkpoint", str(ckpt), "--out", str(tmp_path / "pt2")]) == 0
    program = torch.export.load(str(tmp_path / "pt2" / "model.pt2")).module()
    lm = model.load_checkpoint(ckpt)
    ids = torch.randint(0, 256, (1, 6))
    with torch.no_grad():
        torch.testing.assert_close(program(ids), lm(ids), rtol=0, atol=1e-5)
    assert (tmp_path / "pt2" / "tokenizer.json").is_file()


def test_export_hf(ckpt: Path, tmp_path: Path) -> None:
    assert main(["export", "hf", "--checkpoint", str(ckpt), "--out", str(tmp_path / "hf")]) == 0
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["model_type"] == "llama"


def test_export_onnx_into_a_folder_of_other_files_is_one_error_line(ckpt: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    assert main(["export", "onnx", "--checkpoint", str(ckpt), "--out", str(tmp_path / "busy")]) == 1
    assert capsys.readouterr().err.startswith("lmplanes: error: export failed:")


def test_modelpack_round_trip(ckpt: Path, tmp_path: Path) -> None:
    assert main(["export", "modelpack", "--checkpoint", str(ckpt), "--out", str(tmp_path / "pack")]) == 0
    assert main(["export", "unpack", str(tmp_path / "pack"), "--out", str(tmp_path / "back"),
                 "--cache", str(tmp_path / "cache")]) == 0
    assert main(["checkpoint", "verify", str(tmp_path / "back")]) == 0
    assert main(["export", "unpack", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")]) == 1


def test_export_onnx_without_the_export_extra_says_what_to_install(ckpt: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    import export

    def missing(*args: object, **kwargs: object) -> None:
        raise ModuleNotFoundError("No module named 'onnxscript'", name="onnxscript")

    monkeypatch.setattr(export, "export_onnx", missing)
    assert main(["export", "onnx", "--checkpoint", str(ckpt), "--out", str(tmp_path / "onnx")]) == 1
    assert capsys.readouterr().err.strip() == (
        "lmplanes: error: export onnx needs onnxscript: pip install 'lmplanes[export]'"
    )
