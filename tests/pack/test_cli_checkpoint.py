"""``lmplanes checkpoint verify|show`` and ``lmplanes convert``, in-process through ``main``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import model
import specs
from pack.cli import main


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    lm = model.build(specs.load_preset("llama-tiny"))
    return model.save_checkpoint(lm, tmp_path_factory.mktemp("ckpts") / "tiny")


def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for p in src.iterdir():
        (dst / p.name).write_bytes(p.read_bytes())
    return dst


def test_verify_ok(ckpt, capsys):
    assert main(["checkpoint", "verify", str(ckpt)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"ok: {ckpt} (3 files, 0.5 MB, sha256:")


def test_verify_names_every_damaged_file_and_exits_1(ckpt, tmp_path, capsys):
    bad = _copy(ckpt, tmp_path / "bad")
    weights = bad / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    (bad / "notes.txt").write_text("mine")
    assert main(["checkpoint", "verify", str(ckpt), str(bad)]) == 1
    captured = capsys.readouterr()
    assert captured.out.startswith(f"ok: {ckpt}")
    lines = captured.err.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith(f"lmplanes: error: {bad}: ") for line in lines)
    assert any("model.safetensors: sha256" in line for line in lines)
    assert any("notes.txt: present but not listed" in line for line in lines)


def test_verify_removes_leftovers_of_a_killed_save_and_says_so(ckpt, tmp_path, capsys):
    target = _copy(ckpt, tmp_path / "target")
    stale = tmp_path / ".target.tmp-abcd1234"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half a checkpoint")
    assert main(["checkpoint", "verify", str(target)]) == 0
    assert not stale.exists()
    assert f"removed {stale}: left by an interrupted save to {target}" in capsys.readouterr().out


def test_verify_missing_directory(tmp_path, capsys):
    assert main(["checkpoint", "verify", str(tmp_path / "nope")]) == 1
    assert "no such checkpoint directory" in capsys.readouterr().err


def test_show_text_and_json(ckpt, capsys):
    assert main(["checkpoint", "show", str(ckpt)]) == 0
    text = capsys.readouterr().out
    for fragment in ("name:", "llama-tiny", "parameters:", f"{model.count_parameters(specs.load_preset('llama-tiny')):,}",
                     "dtype:", "float32", "heads:", "4 query, 2 key/value, head dim 16", "manifest:", "sha256:"):
        assert fragment in text, fragment
    assert main(["checkpoint", "show", str(ckpt), "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["layers"] == 2 and facts["vocab_size"] == 256 and facts["size"] == "0.5 MB"


def test_show_refuses_a_folder_that_is_not_a_checkpoint(tmp_path, capsys):
    assert main(["checkpoint", "show", str(tmp_path)]) == 1
    assert "not a checkpoint directory (no config.json)" in capsys.readouterr().err


def test_convert_both_ways_keeps_the_logits(ckpt, tmp_path, capsys):
    hf_dir, back = tmp_path / "hf", tmp_path / "back"
    assert main(["convert", "--checkpoint", str(ckpt), "--out", str(hf_dir)]) == 0
    assert (hf_dir / "config.json").is_file() and json.loads((hf_dir / "config.json").read_text())["model_type"] == "llama"
    assert main(["convert", "--hf", str(hf_dir), "--out", str(back)]) == 0
    assert "wrote" in capsys.readouterr().out
    ids = torch.randint(0, 256, (1, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model.load_checkpoint(back)(ids), model.load_checkpoint(ckpt)(ids), atol=0, rtol=0)
    assert main(["convert", "--hf", str(hf_dir), "--out", str(back)]) == 1  # exists: refused without --overwrite
    assert "overwrite" in capsys.readouterr().err
    assert main(["convert", "--hf", str(hf_dir), "--out", str(back), "--overwrite", "--dtype", "bfloat16"]) == 0
    assert model.load_checkpoint(back).lm_head.weight.dtype == torch.bfloat16


def test_convert_an_unsupported_family_is_one_line(tmp_path, capsys):
    hf_dir = tmp_path / "mamba"
    hf_dir.mkdir()
    (hf_dir / "config.json").write_text(json.dumps({"model_type": "mamba"}))
    assert main(["convert", "--hf", str(hf_dir), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"lmplanes: error: {hf_dir}: config.json: unsupported Hugging Face model_type 'mamba'; supported: gpt2, llama"]
    assert not (tmp_path / "out").exists()
