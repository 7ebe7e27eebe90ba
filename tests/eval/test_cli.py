"""``lmplanes eval ppl|perf|tasks`` and ``python -m eval``: what they print and write, and a user's mistake as one
line with a non-zero exit."""

from __future__ import annotations

import json

import pytest

from eval import WIKITEXT2_TEST, perplexity
from eval.__main__ import main as eval_main
from pack.cli import build_parser, main


def _text(tmp_path) -> str:
    path = tmp_path / "text.txt"
    path.write_text(WIKITEXT2_TEST.read_text(encoding="utf-8")[:1500], encoding="utf-8")
    return str(path)


def test_ppl_json_is_the_library_result(tiny_pair, tmp_path, capsys) -> None:
    text = _text(tmp_path)
    assert main(["eval", "ppl", "--checkpoint", str(tiny_pair.checkpoint), "--text", text, "--context", "64",
                 "--stride", "48", "--batch", "8", "--json", "--device", "cpu"]) == 0
    printed = json.loads(capsys.readouterr().out)
    expected = perplexity(tiny_pair.lm, tiny_pair.tokenizer.encode(open(text).read()), context=64, stride=48, batch_size=3,
                          progress=False)
    assert set(printed) >= {"perplexity", "nll", "tokens", "tokens_per_s"}
    assert printed["tokens"] == expected.tokens
    assert printed["perplexity"] == pytest.approx(expected.perplexity, rel=1e-6)


def test_ppl_reads_wikitext2_by_default() -> None:
    args = build_parser().parse_args(["eval", "ppl", "--checkpoint", "x"])
    assert args.text == str(WIKITEXT2_TEST)


def test_python_m_eval_ppl_prints_a_sentence(tiny_pair, tmp_path, capsys) -> None:
    assert eval_main(["ppl", "--checkpoint", str(tiny_pair.checkpoint), "--text", _text(tmp_path), "--context", "128",
                      "--batch", "8", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("perplexity ") and "context 128, stride 64" in out


def test_a_bad_setting_is_one_line(tiny_pair, tmp_path, capsys) -> None:
    status = main(["eval", "ppl", "--checkpoint", str(tiny_pair.checkpoint), "--text", _text(tmp_path), "--context", "64",
                   "--stride", "65"])
    err = capsys.readouterr().err.strip()
    assert status == 2 and len(err.splitlines()) == 1 and "stride (65)" in err
    assert main(["eval", "ppl", "--checkpoint", str(tiny_pair.checkpoint), "--text", str(tmp_path / "missing.txt")]) == 1
    assert "missing.txt" in capsys.readouterr().err


def test_perf_prints_the_table_and_writes_both_forms(tiny_pair, tmp_path, capsys) -> None:
    out = tmp_path / "perf"
    assert main(["eval", "perf", "--checkpoint", str(tiny_pair.checkpoint), "--prompt-tokens", "8", "--new-tokens", "3",
                 "--peak-tflops", "1", "--out", str(out), "--device", "cpu"]) == 0
    table = capsys.readouterr().out
    assert table.startswith("| figure | value |") and "| peak_flops_source | declared |" in table
    assert (out / "perf.md").read_text() == table
    figures = json.loads((out / "perf.json").read_text())
    assert figures["peak_flops"] == 1e12 and figures["prompt_tokens"] == 8 and figures["decode_tokens_per_s"] > 0


def test_tasks_writes_the_yamls(tmp_path, capsys) -> None:
    assert main(["eval", "tasks", str(tmp_path / "tasks")]) == 0
    written = capsys.readouterr().out.split()
    assert sorted(p.rsplit("/", 1)[1] for p in written) == ["lmplanes_mc.yaml", "lmplanes_rolling.yaml"]
