"""Data parallelism on CPU: 2 processes under torchrun (gloo), against one process with the same config.

Each launch costs ~8-15 s of interpreter and torch start-up on 2 cores, so three launches carry every claim:
fsdp2 with activation checkpointing from scratch (its curve and weights; its checkpoint then resumes on 1
process), ddp resumed from a
1-process checkpoint, and a run with one rank killed.

Tolerance: float32 throughout, but two ranks average two half-batch gradients where one process takes the
mean over the whole batch, so sums run in another order (observed: losses agree to ~1e-7 relative, weights to
~1e-6). AdamW divides each update by the root of its second moment, so a parameter whose gradient is tiny can
move by up to a learning-rate-sized step on a rounding difference: weights are held to 1e-4 absolute, losses
to 1e-5 relative.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import model
import specs
from train import Trainer, sharded
from train.optim import build_optimizer
from train.run_dir import RunDir

STORE = model.STORE
ROOT = Path(__file__).resolve().parents[2]
SETTINGS = [
    "max_steps=6",
    "eval_every=3",
    "eval_batches=2",
    "checkpoint_every=3",
    "keep_last=5",
    "schedule.warmup_steps=2",
    "schedule.decay_steps=6",
    "data.batch_size=8",
    "grad_accum_steps=2",  # exercises no_sync / set_requires_gradient_sync
    "precision=float32",
    "compile=false",
]
LOSS_RTOL = 1e-5
WEIGHT_ATOL = 1e-4


def config(*extra: str) -> specs.TrainConfig:
    return specs.apply_overrides(specs.load_config("gpt-shakespeare-char", kind="train"), [*SETTINGS, *extra])


def losses(run: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["train_loss"] for r in rows}


def lmplanes(*args: str, nproc: int = 2, **popen: object) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    command = [sys.executable, "-m", "pack", "train", *args, "--quiet", "--nproc", str(nproc)]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            **popen)  # type: ignore[call-overload]


def finish(process: subprocess.Popen, timeout: float = 240) -> str:
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output
    return output


def weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    """A checkpoint's weights by name, single-file or sharded (read on one process, no group)."""
    if sharded.is_sharded(checkpoint):
        lm = STORE.build(config().model)
        sharded.load(lm, None, checkpoint, distributed=False)
    else:
        lm = STORE.load(checkpoint)
    return {name: tensor.detach() for name, tensor in lm.state_dict().items()}


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    worst = max(float((wa[k] - wb[k]).abs().max()) for k in wa)
    print(f"max weight difference {worst:.2e}")
    assert worst <= WEIGHT_ATOL, worst


def assert_same_losses(reference: dict[int, float], run: dict[int, float], steps: range) -> None:
    print(f"max relative loss difference {max(abs(run[s] / reference[s] - 1) for s in steps):.2e}")
    for step in steps:
        assert run[step] == pytest.approx(reference[step], rel=LOSS_RTOL), step


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six steps on one process (single strategy): the run the others must reproduce."""
    run = tmp_path_factory.mktemp("dist") / "one"
    Trainer(config(), run, STORE, progress=False).fit()
    return run


def cut_at_step_3(run: Path, into: Path) -> Path:
    shutil.copytree(run, into)
    shutil.rmtree(into / "checkpoints" / "step-00000006")
    (into / "checkpoints" / "LATEST").write_text("step-00000003\n")
    return into


def test_fsdp2_on_2_ranks_matches_one_process_and_resumes_on_one(reference: Path, tmp_path: Path) -> None:
    run = tmp_path / "fsdp2"
    finish(lmplanes("gpt-shakespeare-char", "--out", str(run), *(f"--set={s}" for s in SETTINGS),
                    "--set=parallel.strategy=fsdp2", "--set=activation_checkpointing=true"))  # composes with fsdp2
    want = losses(reference)
    assert_same_losses(want, losses(run), range(1, 7))
    final = run / "checkpoints" / "step-00000006"
    assert sharded.is_sharded(final) and (final / "dcp" / "__1_0.distcp").is_file()  # both ranks wrote shards
    assert_same_weights(reference / "checkpoints" / "step-00000006", final)
    # 2 -> 1: the step-3 sharded checkpoint resumes on one process (single strategy) and continues the curve.
    cut = cut_at_step_3(run, tmp_path / "cut")
    resumed = Trainer.resume(cut, STORE, overrides=specs.apply_overrides(config(), ["parallel.strategy=single"]),
                             progress=False)
    assert resumed.steps == 6 and not sharded.is_sharded(resumed.latest)
    assert_same_losses(want, losses(cut), range(4, 7))
    assert_same_weights(reference / "checkpoints" / "step-00000006", resumed.latest)


def test_ddp_on_2_ranks_resumes_a_one_process_checkpoint_and_matches(reference: Path, tmp_path: Path) -> None:
    """1 -> 2: the reference's single-file step-3 checkpoint (optimizer keyed by index) continues under ddp."""
    cut = cut_at_step_3(reference, tmp_path / "cut")
    finish(lmplanes("--resume", str(cut), "--set=parallel.strategy=ddp"))
    assert_same_losses(losses(reference), losses(cut), range(4, 7))
    final = cut / "checkpoints" / "step-00000006"
    assert sharded.is_sharded(final) and RunDir(cut).config().parallel.strategy == "ddp"
    assert_same_weights(reference / "checkpoints" / "step-00000006", final)


def test_a_killed_rank_fails_the_launch_and_keeps_the_last_checkpoint(tmp_path: Path) -> None:
    run = tmp_path / "killed"
    launcher = lmplanes("gpt-shakespeare-char", "--out", str(run), *(f"--set={s}" for s in SETTINGS),
                        "--set=max_steps=100000", "--set=checkpoint_every=2", "--set=eval_every=1000",
                        "--set=parallel.strategy=ddp", start_new_session=True)
    try:
        latest = run / "checkpoints" / "LATEST"
        deadline = time.monotonic() + 120
        while not (latest.is_file() and latest.read_text().strip() >= "step-00000002"):
            assert launcher.poll() is None and time.monotonic() < deadline, "the run never reached step 2"
            time.sleep(0.2)
        worker = _worker_pids(launcher.pid)[-1]
        os.kill(worker, signal.SIGKILL)
        output, _ = launcher.communicate(timeout=120)
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
    assert launcher.returncode != 0, output
    found = RunDir(run).latest(STORE)
    assert found is not None and found.name >= "step-00000002"
    lm = STORE.build(config().model)
    optimizer = build_optimizer(lm, config().optimizer)
    sharded.load(lm, optimizer, found, distributed=False)  # loads, optimizer state included
    assert optimizer.state


def _worker_pids(launcher: int) -> list[int]:
    """The training processes under the launcher (python -m pack -> torchrun -> its 2 workers)."""
    found, frontier = [], [launcher]
    while frontier:
        pid = frontier.pop()
        children = []
        for task in Path(f"/proc/{pid}/task").glob("*/children"):
            children += [int(c) for c in task.read_text().split()]
        found += children
        frontier += children
    workers = [p for p in found if "--nproc" not in Path(f"/proc/{p}/cmdline").read_text()
               and "torch.distributed.run" not in Path(f"/proc/{p}/cmdline").read_text()]
    assert len(workers) == 2, found
    return sorted(workers)
