"""torch.export programs: saved, reloaded with torch.export.load alone, and equal to the model at other batch
and sequence sizes than the trace's; the decode program chains to the full forward."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

import export
import specs
from tests.export.conftest import tiny_lm

TOL = 1e-5  # fp32; the program runs the same ATen kernels as eager PyTorch (observed: 0 for the plain forward)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path]:
    lm = tiny_lm(seed=1)
    return lm, export.export_pt2(lm, tmp_path_factory.mktemp("pt2") / "exported")


@pytest.mark.parametrize(("batch", "seq"), [(1, 1), (2, 9), (4, 40)])
def test_reloaded_program_equals_the_model(exported: tuple[torch.nn.Module, Path], batch: int, seq: int) -> None:
    lm, out = exported
    program = torch.export.load(str(out / "model.pt2")).module()
    ids = torch.randint(0, 256, (batch, seq), generator=torch.Generator().manual_seed(seq))
    with torch.no_grad():
        torch.testing.assert_close(program(ids), lm(ids), rtol=0, atol=TOL)


def test_decode_program_chains_to_the_full_forward(exported: tuple[torch.nn.Module, Path]) -> None:
    lm, out = exported
    step = torch.export.load(str(out / "decode.pt2")).module()
    ids = torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = lm(ids)
        got = step(ids[:, :5], *export.empty_past(lm.config, 2))  # prefill: empty past
        torch.testing.assert_close(got[0], want[:, :5], rtol=0, atol=TOL)
        for start, end in [(5, 6), (6, 7), (7, 12)]:  # single tokens, then several at once
            got = step(ids[:, start:end], *got[1:])
            assert got[1].shape[2] == end
            torch.testing.assert_close(got[0], want[:, start:end], rtol=0, atol=TOL)


def test_card_and_overwrite(exported: tuple[torch.nn.Module, Path]) -> None:
    lm, out = exported
    card = json.loads((out / "modelcard.json").read_text())
    assert sorted(f["path"] for f in card["files"]) == ["config.json", "decode.pt2", "model.pt2"]
    assert card["metrics"]["pt2_max_abs_diff"] <= TOL
    assert card["dtype"] == "float32"
    assert specs.verify_manifest(out) == []
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask, "published with a new directory's permissions"
    with pytest.raises(FileExistsError, match="already holds an export"):
        export.export_pt2(lm, out)
