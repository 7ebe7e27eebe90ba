"""The ``lmplanes`` model of lm-evaluation-harness against the harness's own ``hf`` backend on the same weights.

Both run the shipped tasks (``lmplanes_mc``: multiple choice; ``lmplanes_rolling``: whole-string
loglikelihoods) from local YAMLs (``dataset_path: json`` with ``data_files``) through ``lm_eval.simple_evaluate``;
every per-item loglikelihood must agree to 1e-4 (the issue's bound; float32 on both sides, observed ~1e-5 on
sums of up to ~60 token log-probabilities) and ``acc``/``acc_norm`` exactly. Nothing downloads: the datasets
library runs offline and reads the packaged JSON lines.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from site import getsitepackages as sitepackages

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # read by datasets when it is first imported
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import lm_eval  # noqa: E402
import pytest  # noqa: E402
from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402

from eval.__main__ import main as eval_main  # noqa: E402
from eval.harness import LMPlanesLM  # noqa: E402
from eval.harness_tasks import TASKS, write_tasks  # noqa: E402

TOL = 1e-4


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("tasks")
    write_tasks(folder)
    return folder


def _evaluate(task_dir, model: str, model_args: str) -> dict:
    return lm_eval.simple_evaluate(
        model=model, model_args=model_args, tasks=list(TASKS), device="cpu", batch_size=5, log_samples=True,
        task_manager=TaskManager(include_path=str(task_dir), include_defaults=False), random_seed=0, numpy_random_seed=0,
        torch_random_seed=0, fewshot_random_seed=0,
    )


def _per_item(results: dict, task: str) -> list[list[float]]:
    samples = sorted(results["samples"][task], key=lambda s: s["doc_id"])
    return [[float(r[0]) if isinstance(r, (list, tuple)) else float(r) for r in s["filtered_resps"]] for s in samples]


def test_scores_equal_the_hf_backend(tiny_pair, task_dir) -> None:
    ours = _evaluate(task_dir, "lmplanes", f"checkpoint={tiny_pair.checkpoint}")
    theirs = _evaluate(task_dir, "hf", f"pretrained={tiny_pair.hf},dtype=float32")
    for task in TASKS:
        got, expected = _per_item(ours, task), _per_item(theirs, task)
        assert len(got) == len(expected) > 25
        worst = max(abs(a - b) for g, e in zip(got, expected) for a, b in zip(g, e))
        print(f"{task}: largest loglikelihood difference {worst:.2e}")
        assert worst < TOL, f"{task}: a loglikelihood differs by {worst}"
    mc = "lmplanes_mc"
    for metric in ("acc,none", "acc_norm,none"):
        assert ours["results"][mc][metric] == theirs["results"][mc][metric]
    for metric in ("word_perplexity,none", "byte_perplexity,none", "bits_per_byte,none"):
        assert ours["results"]["lmplanes_rolling"][metric] == pytest.approx(theirs["results"]["lmplanes_rolling"][metric], rel=TOL)


def test_generate_until_equals_the_hf_backend(tiny_pair) -> None:
    from lm_eval.models.huggingface import HFLM

    prompts = ["Question: What is the capital of France?\nAnswer:", "The river rose", "A good map shows"]
    options = [{"until": ["\n"], "max_gen_toks": 12}, {"until": ["."], "max_gen_toks": 9}, {"max_gen_toks": 5}]

    def requests() -> list[Instance]:
        return [Instance("generate_until", {}, (p, dict(o)), i) for i, (p, o) in enumerate(zip(prompts, options))]

    ours = LMPlanesLM(lm=tiny_pair.lm, tokenizer=tiny_pair.tokenizer, batch_size=2, device="cpu")
    theirs = HFLM(pretrained=str(tiny_pair.hf), dtype="float32", device="cpu", batch_size=2)
    got, expected = ours.generate_until(requests(), disable_tqdm=True), theirs.generate_until(requests(), disable_tqdm=True)
    assert got == expected
    assert any(len(text) > 3 for text in got)  # something was generated, not only empty strings


def test_the_lm_eval_command_line_runs_our_model(tiny_pair, task_dir, tmp_path) -> None:
    status = eval_main(["harness",
        "--model", "lmplanes", "--model_args", f"checkpoint={tiny_pair.checkpoint}", "--include_path", str(task_dir),
        "--tasks", "lmplanes_mc", "--limit", "4", "--device", "cpu", "--output_path", str(tmp_path / "out"),
    ])
    assert status == 0
    (found,) = (tmp_path / "out").rglob("results_*.json")
    result = json.loads(found.read_text())
    assert result["config"]["model"] == "lmplanes"
    assert 0.0 <= result["results"]["lmplanes_mc"]["acc,none"] <= 1.0


def test_the_plain_lm_eval_script_knows_lmplanes(tiny_pair, task_dir, tmp_path) -> None:
    """``lm_eval --model lmplanes`` itself, in a fresh process: the installed ``lmplanes-lm-eval.pth`` start-up hook
    registers the model when lm_eval imports its models, and lm_eval's built-in models stay registered."""
    script = Path(sys.executable).with_name("lm_eval")
    assert script.exists(), f"lm-eval's console script is missing next to {sys.executable}"
    hooks = [Path(site) / "lmplanes-lm-eval.pth" for site in sitepackages()]
    assert any(h.exists() for h in hooks), "lmplanes-lm-eval.pth is not installed: reinstall lmplanes (pip install -e .)"
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([str(script),
        "--model", "lmplanes", "--model_args", f"checkpoint={tiny_pair.checkpoint}", "--include_path", str(task_dir),
        "--tasks", "lmplanes_mc", "--limit", "4", "--device", "cpu", "--output_path", str(tmp_path / "out"),
    ], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (found,) = (tmp_path / "out").rglob("results_*.json")
    result = json.loads(found.read_text())
    assert result["config"]["model"] == "lmplanes"
    assert 0.0 <= result["results"]["lmplanes_mc"]["acc,none"] <= 1.0

    probe = ("from lm_eval.api.registry import get_model; "
             "print(get_model('lmplanes').__module__, get_model('hf').__name__)")
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.stdout.split() == ["eval.harness", "HFLM"], done.stderr[-3000:]


def test_refuses_what_it_cannot_do(tiny_pair) -> None:
    with pytest.raises(ValueError, match="either checkpoint"):
        LMPlanesLM()
    with pytest.raises(ValueError, match="auto"):
        LMPlanesLM(lm=tiny_pair.lm, tokenizer=tiny_pair.tokenizer, batch_size="auto")
    ours = LMPlanesLM(lm=tiny_pair.lm, tokenizer=tiny_pair.tokenizer)
    with pytest.raises(ValueError, match="does not know.*beam_width"):
        ours.generate_until([Instance("generate_until", {}, ("Hi", {"beam_width": 2, "max_gen_toks": 8}), 0)], disable_tqdm=True)
    with pytest.raises(ValueError, match="no room for a prompt"):
        ours.generate_until([Instance("generate_until", {}, ("Hi", {"max_gen_toks": 128}), 0)], disable_tqdm=True)
