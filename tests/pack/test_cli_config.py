"""``lmplanes config new|validate|show``: in-process through ``main`` and once as ``python -m pack``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import specs
from pack.cli import main

ROOT = Path(__file__).resolve().parents[2]

# The v1 (flat, nanoGPT-style) model schema that specs/model_config.py migrates to v2.
V1_CONFIG = """\
kind: model
version: 1
name: old-tiny
vocab_size: 256
d_model: 64
n_layers: 2
max_seq_len: 128
n_heads: 4
n_kv_heads: 2
attn_bias: false
attn_kernel: auto
mlp: swiglu
mlp_hidden: 176
mlp_bias: false
rope_theta: 500000.0
positions: rope
norm: rmsnorm
"""

# Two problems pydantic reports together: a misspelt key and a wrong type in a nested config.
BROKEN_CONFIG = """\
kind: model
version: 2
vocab_size: 256
d_model: 64
n_layers: 2
max_seq_len: 128
nrom: rmsnorm
attention:
  n_heads: four
"""


def run_pack(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python -m pack ARGS`` in a child process, with this checkout importable."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "pack", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def error_lines(stderr: str) -> list[str]:
    lines = stderr.strip().splitlines()
    assert lines, "expected an error message on stderr"
    assert all(line.startswith("lmplanes: error: ") for line in lines), stderr
    assert "Traceback" not in stderr
    return lines


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


# ------------------------------------------------------------------------------------------------------- new


def test_new_show_validate_round_trip(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "new", "llama-tiny", "-o", "m.yaml", "--set", "n_layers=3"]) == 0
    assert "wrote m.yaml (model v3, from preset llama-tiny)" in capsys.readouterr().out

    expected = specs.apply_overrides(specs.load_preset("llama-tiny"), ["n_layers=3"])
    assert specs.load_config(in_tmp / "m.yaml") == expected

    assert main(["config", "validate", "m.yaml"]) == 0
    assert capsys.readouterr().out == "ok: m.yaml (model v3)\n"

    assert main(["config", "show", "m.yaml"]) == 0
    assert yaml.safe_load(capsys.readouterr().out) == specs.to_dict(expected)

    assert main(["config", "show", "m.yaml", "--format", "json", "--set", "attention.n_kv_heads=4"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["attention"]["n_kv_heads"] == 4 and shown["n_layers"] == 3


@pytest.mark.parametrize("preset", specs.preset_names())
def test_every_preset_writes_a_valid_file(preset: str, in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "new", "--preset", preset]) == 0
    assert main(["config", "validate", f"{preset}.yaml"]) == 0
    assert f"ok: {preset}.yaml (model v3)" in capsys.readouterr().out


def test_new_json_by_suffix_and_by_format(in_tmp: Path) -> None:
    (in_tmp / "sub/dir").mkdir(parents=True)
    assert main(["config", "new", "llama-tiny", "-o", "sub/dir/m.json"]) == 0
    assert json.loads((in_tmp / "sub/dir/m.json").read_text())["kind"] == "model"
    assert main(["config", "new", "llama-tiny", "--format", "json"]) == 0
    assert json.loads((in_tmp / "llama-tiny.json").read_text())["version"] == 3


def test_new_to_stdout(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "new", "llama-tiny", "-o", "-"]) == 0
    assert yaml.safe_load(capsys.readouterr().out) == specs.to_dict(specs.load_preset("llama-tiny"))
    assert list(in_tmp.iterdir()) == []


def test_new_refuses_to_overwrite_without_force(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = in_tmp / "m.yaml"
    target.write_text("precious\n")
    assert main(["config", "new", "llama-tiny", "-o", "m.yaml"]) == 1
    (line,) = error_lines(capsys.readouterr().err)
    assert "m.yaml already exists" in line and "--force" in line
    assert target.read_text() == "precious\n"

    assert main(["config", "new", "llama-tiny", "-o", "m.yaml", "--force"]) == 0
    assert specs.load_config(target) == specs.load_preset("llama-tiny")
    assert [p.name for p in in_tmp.iterdir()] == ["m.yaml"]  # no temporary file left beside it


def test_new_into_a_missing_folder_names_it(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "new", "llama-tiny", "-o", "nodir/x.yaml"]) == 1
    (line,) = error_lines(capsys.readouterr().err)
    assert line == "lmplanes: error: could not write nodir/x.yaml: folder nodir does not exist"
    assert list(in_tmp.iterdir()) == []  # the folder was not created


def test_os_errors_are_one_line_without_errno(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (in_tmp / "m.yaml").mkdir()  # a directory in the way of the file --force replaces
    assert main(["config", "new", "llama-tiny", "-o", "m.yaml", "--force"]) == 1
    (line,) = error_lines(capsys.readouterr().err)
    assert line == "lmplanes: error: could not write m.yaml: Is a directory"
    assert [p.name for p in in_tmp.iterdir()] == ["m.yaml"]


def test_unknown_preset_suggests_close_names(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "new", "llama-tny"]) == 1
    (line,) = error_lines(capsys.readouterr().err)
    assert "unknown preset 'llama-tny'" in line and "'llama-tiny'" in line
    assert list(in_tmp.iterdir()) == []

    assert main(["config", "show", "no-such-thing"]) == 1
    (line,) = error_lines(capsys.readouterr().err)
    assert "unknown preset 'no-such-thing'" in line


def test_set_typo_suggests_the_key(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "new", "llama-tiny", "--set", "attention.n_head=8"]) == 1
    (line,) = error_lines(capsys.readouterr().err)
    assert line == "lmplanes: error: attention.n_head: unknown key; did you mean 'n_heads'?"
    assert not (in_tmp / "llama-tiny.yaml").exists()


def test_set_impossible_value_names_the_field(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "show", "llama-tiny", "--set", "attention.n_kv_heads=3"]) == 1
    (line,) = error_lines(capsys.readouterr().err)
    assert line.startswith("lmplanes: error: attention.n_kv_heads: ") and "divisible" in line


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["config", "new"], "exactly one"),
        (["config", "new", "llama-tiny", "--preset", "llama-tiny"], "exactly one"),
        (["config", "new", "llama-tiny", "-o", "m.txt"], "cannot tell the format"),
        (["config", "new", "llama-tiny", "-o", "m.yaml", "--format", "json"], "contradicts"),
        (["config", "new", "llama-tiny", "--set"], "expected one argument"),
        (["config", "show", "llama-tiny", "--format", "toml"], "invalid choice"),
        (["config", "validate"], "required"),
        (["config"], "required"),
        (["config", "frobnicate"], "invalid choice"),
    ],
)
def test_malformed_command_lines_exit_2(
    argv: list[str], message: str, in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert message in line and "--help" in line
    assert list(in_tmp.iterdir()) == []


# -------------------------------------------------------------------------------------------------- validate


def test_validate_lists_every_problem(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (in_tmp / "bad.yaml").write_text(BROKEN_CONFIG)
    assert main(["config", "validate", "bad.yaml"]) == 1
    captured = capsys.readouterr()
    lines = error_lines(captured.err)
    assert captured.out == ""
    assert any(line.startswith("lmplanes: error: bad.yaml: nrom: unknown key; did you mean 'norm'?") for line in lines)
    assert any(line.startswith("lmplanes: error: bad.yaml: attention.n_heads: ") for line in lines)
    assert len(lines) == 2


def test_validate_keeps_going_and_fails_if_any_fails(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "new", "llama-tiny", "-o", "good.json"]) == 0
    (in_tmp / "bad.yaml").write_text("kind: model\nversion: 2\nvocab_size: [\n")
    capsys.readouterr()
    assert main(["config", "validate", "bad.yaml", "missing.yaml", "good.json"]) == 1
    captured = capsys.readouterr()
    assert captured.out == "ok: good.json (model v3)\n"
    bad, missing = error_lines(captured.err)
    assert bad.startswith("lmplanes: error: bad.yaml: not valid YAML")
    assert missing == "lmplanes: error: missing.yaml: no such file"


def test_validate_does_not_treat_a_preset_name_as_a_file(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "validate", "llama-tiny"]) == 1
    assert error_lines(capsys.readouterr().err) == ["lmplanes: error: llama-tiny: no such file"]
    (in_tmp / "adir").mkdir()
    assert main(["config", "validate", "adir"]) == 1
    assert error_lines(capsys.readouterr().err) == ["lmplanes: error: adir: not a file"]


def test_v1_file_validates_after_migration(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (in_tmp / "old.yaml").write_text(V1_CONFIG)
    assert main(["config", "validate", "old.yaml"]) == 0
    assert capsys.readouterr().out == "ok: old.yaml (model v3, migrated from v1)\n"

    assert main(["config", "show", "old.yaml"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["version"] == 3
    assert shown["attention"]["n_heads"] == 4 and shown["attention"]["n_kv_heads"] == 2
    assert shown["mlp"] == {"kind": "swiglu", "hidden": 176, "bias": False, "gelu_approximate": "none"}
    assert shown["rope"]["theta"] == 500000.0
    assert "n_heads" not in shown and "rope_theta" not in shown


def test_v1_file_with_a_problem_names_the_v2_field(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (in_tmp / "old.yaml").write_text(V1_CONFIG.replace("n_kv_heads: 2", "n_kv_heads: 3"))
    assert main(["config", "validate", "old.yaml"]) == 1
    (line,) = error_lines(capsys.readouterr().err)
    assert line.startswith("lmplanes: error: old.yaml: attention.n_kv_heads: ")


# ------------------------------------------------------------------------------------------------ subprocess


def test_python_m_pack_exit_codes(tmp_path: Path) -> None:
    done = run_pack("config", "new", "llama-tiny", "-o", "m.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "m.yaml").is_file()

    done = run_pack("config", "validate", "m.yaml", cwd=tmp_path)
    assert (done.returncode, done.stdout) == (0, "ok: m.yaml (model v3)\n")

    (tmp_path / "bad.yaml").write_text(BROKEN_CONFIG)
    done = run_pack("config", "validate", "bad.yaml", cwd=tmp_path)
    assert done.returncode == 1
    assert len(error_lines(done.stderr)) == 2

    done = run_pack("config", "new", "llama-tiny", "-o", "m.yaml", cwd=tmp_path)
    assert done.returncode == 1 and "already exists" in done.stderr

    done = run_pack(cwd=tmp_path)
    assert done.returncode == 2
    (line,) = error_lines(done.stderr)
    assert "COMMAND" in line

    done = run_pack("--version", cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.startswith("lmplanes ")


def test_config_commands_do_not_import_torch(tmp_path: Path) -> None:
    """Config work needs only specs; loading torch would make every config command slow to start."""
    code = (
        "import sys; from pack.cli import main; rc = main(['config', 'show', 'llama-tiny']); "
        "assert 'torch' not in sys.modules, 'torch was imported'; sys.exit(rc)"
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
