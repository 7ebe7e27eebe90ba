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
from pack.config_cmd import FORMATS
from pack.sizes_view import human_bytes, human_count

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
    assert "wrote m.yaml (model v4, from preset llama-tiny)" in capsys.readouterr().out

    expected = specs.apply_overrides(specs.load_preset("llama-tiny"), ["n_layers=3"])
    assert specs.load_config(in_tmp / "m.yaml") == expected

    assert main(["config", "validate", "m.yaml"]) == 0
    assert capsys.readouterr().out == "ok: m.yaml (model v4)\n"

    assert main(["config", "show", "m.yaml"]) == 0
    assert yaml.safe_load(capsys.readouterr().out) == specs.to_dict(expected)

    assert main(["config", "show", "m.yaml", "--format", "json", "--set", "attention.n_kv_heads=4"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["attention"]["n_kv_heads"] == 4 and shown["n_layers"] == 3


@pytest.mark.parametrize("preset", specs.preset_names())
def test_every_preset_writes_a_valid_file(preset: str, in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "new", "--preset", preset]) == 0
    assert main(["config", "validate", f"{preset}.yaml"]) == 0
    assert f"ok: {preset}.yaml (model v4)" in capsys.readouterr().out


def test_new_json_by_suffix_and_by_format(in_tmp: Path) -> None:
    (in_tmp / "sub/dir").mkdir(parents=True)
    assert main(["config", "new", "llama-tiny", "-o", "sub/dir/m.json"]) == 0
    assert json.loads((in_tmp / "sub/dir/m.json").read_text())["kind"] == "model"
    assert main(["config", "new", "llama-tiny", "--format", "json"]) == 0
    assert json.loads((in_tmp / "llama-tiny.json").read_text())["version"] == 4


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


# ------------------------------------------------------------------------------------------------ show sizes


def _comments(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("#")]


def test_show_yaml_ends_with_the_sizes_as_comments(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "show", "gemma3-1b"]) == 0
    out = capsys.readouterr().out
    assert yaml.safe_load(out) == specs.to_dict(specs.load_preset("gemma3-1b"))  # still the config, loadable
    comments = _comments(out)
    assert out.endswith(comments[-1] + "\n") and len(comments) >= 10  # one block, at the end
    text = "\n".join(comments)
    for fragment in (
        "parameters     999,885,952 (999.89M)",
        "embeddings   301,989,888",
        "attention     76,690,432",  # parts are right-aligned under the total
        "weights        1.86 GiB (bfloat16)",  # 999,885,952 * 2 bytes
        "gradients      1.86 GiB (bfloat16)",
        "AdamW states   11.17 GiB (two float32 moments + a float32 master copy)",  # 12 bytes a parameter
        "training       14.90 GiB",
        "KV cache       26.00 KiB per token, 832.00 MiB per row of 32,768 tokens (bfloat16)",  # 2*26*256*2 B
        "22 of 26 layers slide over 512 tokens",
    ):
        assert fragment in text, fragment


def test_show_sizes_of_a_moe_deltanet_hybrid(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "show", "qwen3-mini"]) == 0
    out = capsys.readouterr().out
    assert "#   active            402,116,480 (402.12M) per token" in out
    assert "plus 12.28 MiB per row of fixed DeltaNet state" in out
    assert "#     experts           805,306,368" in out and "#     deltanet          101,255,040" in out


def test_show_sizes_of_an_encoder_and_with_overrides(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "show", "bert-1.7b"]) == 0
    text = "\n".join(_comments(capsys.readouterr().out))
    assert "1,679,261,498 (1.68B)" in text and "(two float32 moments)" in text
    assert "KV cache" in text and "none (an encoder keeps no cache)" in text

    assert main(["config", "show", "llama-tiny", "--set", "n_layers=3"]) == 0
    cfg = specs.apply_overrides(specs.load_preset("llama-tiny"), ["n_layers=3"])
    assert f"parameters     {specs.parameter_count(cfg):,} " in capsys.readouterr().out


@pytest.mark.parametrize("fmt", FORMATS)
def test_show_sizes_flag_prints_the_figures_as_data(fmt: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "show", "llama-55m", "--sizes", "--format", fmt, "--set", "dtype=bfloat16"]) == 0
    out = capsys.readouterr().out
    data = json.loads(out) if fmt == "json" else yaml.safe_load(out)
    cfg = specs.apply_overrides(specs.load_preset("llama-55m"), ["dtype=bfloat16"])
    assert data == specs.model_sizes(cfg).to_dict()
    assert data["parameters"] == 55_321_088 and data["weight_bytes"] == 2 * 55_321_088
    assert data["optimizer_bytes"] == 12 * 55_321_088 and data["kv_cache_bytes_per_token"] == 2 * 8 * 2 * 64 * 2


def test_show_json_stays_the_config_alone(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "show", "gemma3-1b", "--format", "json"]) == 0
    assert specs.from_dict(json.loads(capsys.readouterr().out)) == specs.load_preset("gemma3-1b")


def test_show_sizes_a_training_config_by_its_model(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    train = specs.load_preset("gpt-shakespeare-char", kind="train")
    specs.dump_config(train, in_tmp / "run.yaml")
    assert main(["config", "show", "run.yaml"]) == 0
    out = capsys.readouterr().out
    assert specs.from_dict(yaml.safe_load(out)) == train
    assert f"{specs.parameter_count(train.model):,}" in "\n".join(_comments(out))

    specs.dump_config(specs.GenerationConfig(), in_tmp / "gen.yaml")
    assert main(["config", "show", "gen.yaml"]) == 0
    assert _comments(capsys.readouterr().out) == []  # nothing to size
    assert main(["config", "show", "gen.yaml", "--sizes"]) == 1
    (line,) = error_lines(capsys.readouterr().err)
    assert line == "lmplanes: error: gen.yaml is a generation config, which describes no model to size"


@pytest.mark.parametrize(
    ("n", "text"),
    [(0, "0 B"), (1023, "1023 B"), (1024, "1.00 KiB"), (1536, "1.50 KiB"), (3 * 2**30, "3.00 GiB"), (2**50, "1.00 PiB"),
     (2**60, "1024.00 PiB")],
)
def test_human_bytes(n: int, text: str) -> None:
    assert human_bytes(n) == text


@pytest.mark.parametrize(
    ("n", "text"), [(999, "999"), (1000, "1.00K"), (55_321_088, "55.32M"), (1_679_261_498, "1.68B"), (10**13, "10.00T")]
)
def test_human_count(n: int, text: str) -> None:
    assert human_count(n) == text


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
    assert captured.out == "ok: good.json (model v4)\n"
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
    assert capsys.readouterr().out == "ok: old.yaml (model v4, migrated from v1)\n"

    assert main(["config", "show", "old.yaml"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["version"] == 4
    assert shown["attention"]["n_heads"] == 4 and shown["attention"]["n_kv_heads"] == 2
    assert shown["mlp"] == {"kind": "swiglu", "hidden": 176, "bias": False, "gelu_approximate": "none",
                             "dropout": 0.0}
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
    assert (done.returncode, done.stdout) == (0, "ok: m.yaml (model v4)\n")

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
