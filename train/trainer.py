"""The training loop over any :class:`specs.CausalLM`, with evaluation, checkpoints and exact resume.

A run is a pure function of its config and the data: the model is initialised from ``seed``, batch ``i`` of
the training stream is fixed by the data plane's cursor, the learning rate is a function of the step, and
dropout draws come from PyTorch's generator, whose state is checkpointed. So a run stopped after step ``k``
and resumed computes, on the same machine, the same losses at every later step as a run never stopped
(bitwise on CPU in float32; tested).

Under ``parallel.strategy`` ``ddp`` or ``fsdp2`` the same loop runs in every process of a ``torchrun`` launch
(``train.parallelize`` wraps the model, ``train.sharded`` writes the checkpoints); rank 0 alone logs, shows
progress, writes metrics and publishes checkpoints. Each rank trains on its share of every global batch, so
the run computes what one process would with the same config, up to the order of floating-point sums.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from data.rank_share import RankShare
from specs.batch import Batch
from specs.card import DataRef
from specs.protocols import ModelStore
from specs.train_config import TrainConfig
from train import sharded
from train import state as train_state
from train.distributed import join, local_device
from train.loss import lm_loss
from train.metrics import MetricsLog, NoMetrics
from train.optim import build_optimizer
from train.parallelize import gradient_sync, parallelize
from train.run_dir import RunDir
from train.schedule import lr_at
from train.stop import stop_on_signals
from train.streams import Streams, open_streams
from train.throughput import flops_per_token, peak_flops
from train.wrappers import apply_activation_checkpointing, compile_model

log = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass(frozen=True, slots=True)
class RunResult:
    steps: int  # optimizer steps completed
    final_train_loss: float | None
    final_val_loss: float | None
    best_val_loss: float | None
    latest: Path | None  # the newest checkpoint
    stopped_by: str | None = None  # the signal that stopped the run early, if any


class Trainer:
    """Trains ``cfg.model`` into the run directory ``run_dir`` through ``store`` (which builds and checkpoints
    models; the trainer never imports model code)."""

    def __init__(self, cfg: TrainConfig, run_dir: str | Path, store: ModelStore, *, progress: bool = True) -> None:
        self.cfg = cfg
        self.run = RunDir(run_dir)
        self.store = store
        self.progress = progress
        self.world = join(cfg.parallel, _device(cfg.device))
        self.device = local_device(_device(cfg.device), self.world)

    # ---------------------------------------------------------------------------------------------- entries

    def fit(self) -> RunResult:
        """Start a new run in an empty (or missing) run directory."""
        with contextlib.closing(self.world):
            if self.world.main:
                self.run.start(self.cfg)
            self.world.barrier()
            torch.manual_seed(self.cfg.seed)  # every rank builds the same initial weights
            random.seed(self.cfg.seed)
            model = self.store.build(self.cfg.model, device=self.device)
            return self._loop(model, start=0, resumed=None)

    @classmethod
    def resume(cls, run_dir: str | Path, store: ModelStore, *, overrides: TrainConfig | None = None,
               progress: bool = True) -> RunResult:
        """Continue the run in ``run_dir`` from its latest intact checkpoint (``overrides``: the same config with
        a changed ``max_steps`` and the like; the saved config is updated)."""
        run = RunDir(run_dir)
        cfg = overrides or run.config()
        trainer = cls(cfg, run_dir, store, progress=progress)
        world = trainer.world
        with contextlib.closing(world):
            if overrides is not None and world.main:
                run.save_config(cfg)
            latest = world.broadcast(run.latest(store) if world.main else None)  # one rank verifies the files
            if latest is None:
                raise FileNotFoundError(f"{run.root} has no intact checkpoint to resume from")
            saved = train_state.read(latest)
            if sharded.is_sharded(latest):  # weights are read after the model is wrapped, into its layout
                model = store.build(cfg.model, device=trainer.device)
            else:
                model = store.load(latest, device=trainer.device)
            return trainer._loop(model, start=saved.step, resumed=saved, source=latest)

    # -------------------------------------------------------------------------------------------------- loop

    def _loop(self, model: torch.nn.Module, *, start: int, resumed: train_state.TrainState | None,
              source: Path | None = None) -> RunResult:
        cfg, world = self.cfg, self.world
        streams = open_streams(cfg, rank=world.rank, world_size=world.world_size)
        if streams.vocab_size > cfg.model.vocab_size:
            raise ValueError(
                f"the corpus tokenizer has {streams.vocab_size} tokens but model.vocab_size is {cfg.model.vocab_size}"
            )
        model.train()
        if cfg.activation_checkpointing:
            apply_activation_checkpointing(model)
        single = cfg.parallel.strategy == "single"
        named_optimizer = None
        if resumed is not None and resumed.optimizer is not None and not single:  # a single-file checkpoint
            named_optimizer = sharded.full_optimizer_state(model, cfg, resumed.optimizer)
        if cfg.compile:
            self._warm_up(model, streams.val.batch(0))
            compile_model(model)
        tokens_per_step = cfg.data.batch_size * cfg.data.seq_len * cfg.grad_accum_steps  # global, all ranks
        flops_per_step = flops_per_token(model, cfg.data.seq_len) * tokens_per_step / world.world_size
        model = parallelize(model, cfg, world, self.device)
        optimizer = build_optimizer(model, cfg.optimizer)
        best = None
        if resumed is not None:
            if resumed.optimizer is None:
                assert source is not None
                sharded.load(model, optimizer, source, distributed=world.group)
            elif named_optimizer is not None:
                sharded.set_full_optimizer(model, optimizer, named_optimizer)
            else:
                optimizer.load_state_dict(resumed.optimizer)
            streams.train.load_state_dict(resumed.data)
            train_state.restore_rng(resumed)
            best = resumed.best_val_loss
        resume_after = start if resumed is not None else None
        metrics = MetricsLog(self.run.root, resume_after=resume_after) if world.main else NoMetrics()
        peak = peak_flops(self.device, cfg.precision)
        batches = iter(streams.train)
        latest = source  # the checkpoint this run resumed from, if any
        train_loss = val_loss = None
        stopped_by = None
        done = start
        bar = tqdm(total=cfg.max_steps, initial=start, disable=not (self.progress and world.main), unit="step",
                   dynamic_ncols=True)
        # An iteration's time runs from the previous iteration's end to this step's end, so it holds everything
        # the loop does (logging, and the evaluation or checkpoint of an iteration that has one), as nanoGPT's
        # per-iteration time does.
        previous = time.perf_counter()
        with stop_on_signals() as stop, contextlib.closing(bar), contextlib.closing(metrics):
            for step in range(start, cfg.max_steps):
                lr = lr_at(step, cfg.schedule, cfg.optimizer.lr, cfg.max_steps)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                train_loss, grad_norm = self._step(model, optimizer, batches)
                now = time.perf_counter()
                step_s, previous = now - previous, now
                done = step + 1
                row: dict[str, Any] = {
                    "step": done,
                    "train_loss": train_loss,
                    "lr": lr,
                    "step_ms": 1000 * step_s,
                    "tokens_per_s": tokens_per_step / step_s,
                    "mfu": flops_per_step / step_s / peak if peak else None,
                    "grad_norm": grad_norm,
                }
                if not math.isfinite(train_loss):
                    metrics.log(row)
                    metrics.plot()
                    where = f"; the last good checkpoint is {latest}" if latest else "; no checkpoint was written yet"
                    raise TrainingDiverged(f"the training loss is {train_loss} at step {done}{where}")
                due_eval = done % cfg.eval_every == 0 or done == cfg.max_steps
                if due_eval:
                    val_loss = row["val_loss"] = self._evaluate(model, streams.val)
                    row["val_perplexity"] = math.exp(min(val_loss, 50.0))
                metrics.log(row)
                bar.update(1)
                bar.set_postfix(_postfix(row), refresh=False)
                due_save = (done % cfg.checkpoint_every == 0) if cfg.checkpoint_every else due_eval
                if due_save or done == cfg.max_steps or stop:
                    improved = due_eval and val_loss is not None and (best is None or val_loss < best)
                    best = val_loss if improved else best
                    latest = self._checkpoint(model, optimizer, streams.train, done, best, val_loss, streams)
                    if improved and cfg.keep_best:
                        self._save_best(model, done, val_loss, streams)
                    metrics.plot()
                if stop:
                    stopped_by = stop.signal
                    if world.main:
                        log.warning("stopped by %s after step %d; resume with: lmplanes train --resume %s",
                                    stopped_by, done, self.run.root)
                    break
        return RunResult(
            steps=done,
            final_train_loss=train_loss,
            final_val_loss=val_loss,
            best_val_loss=best,
            latest=latest,
            stopped_by=stopped_by,
        )

    def _step(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, batches: Any) -> tuple[float, float | None]:
        """One optimizer step over ``grad_accum_steps`` micro-batches; returns the mean loss and the gradient
        norm before clipping (None without clipping)."""
        cfg = self.cfg
        total = torch.zeros((), device=self.device)
        for micro in range(cfg.grad_accum_steps):
            batch = _to_device(next(batches), self.device)
            with gradient_sync(model, micro == cfg.grad_accum_steps - 1):
                with self._autocast():
                    loss, _parts = lm_loss(model, batch)  # type: ignore[arg-type]
                (loss / cfg.grad_accum_steps).backward()
            total += loss.detach()
        grad_norm = None
        if cfg.grad_clip is not None:
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            grad_norm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)  # fsdp2: a DTensor
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(self.world.mean(total / cfg.grad_accum_steps)), grad_norm

    def _warm_up(self, model: torch.nn.Module, batch: Batch) -> None:
        """One eager forward and backward (and an eager evaluation forward) before compiling, so that choices
        made by measuring, such as the attention kernel of ``"auto"``, are measured here: a ``torch.compile``
        trace cannot time anything. The RNG state is left as it was and the gradients are dropped, so the run
        computes exactly what it would have without this."""
        batch = _to_device(batch, self.device)
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            with self._autocast():
                loss, _ = lm_loss(model, batch)  # type: ignore[arg-type]
            loss.backward()
            model.eval()
            with torch.no_grad(), self._autocast():
                lm_loss(model, batch)  # type: ignore[arg-type]
            model.train()
        model.zero_grad(set_to_none=True)

    @torch.no_grad()
    def _evaluate(self, model: torch.nn.Module, val: RankShare) -> float:
        """Mean loss over the first ``eval_batches`` batches of the validation stream: the same batches at every
        evaluation, so the numbers compare across steps and runs."""
        model.eval()
        losses = []
        for index in range(self.cfg.eval_batches):
            with self._autocast():
                loss, _ = lm_loss(model, _to_device(val.batch(index), self.device))  # type: ignore[arg-type]
            losses.append(loss.float())
        model.train()
        return float(self.world.mean(torch.stack(losses).mean()))  # each rank saw its share of each batch

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.cfg.precision == "float32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=getattr(torch, self.cfg.precision))

    # ------------------------------------------------------------------------------------------- checkpoints

    def _checkpoint(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, stream: RankShare, step: int,
                    best: float | None, val_loss: float | None, streams: Streams) -> Path:
        single = self.cfg.parallel.strategy == "single"
        snapshot = train_state.capture(step, stream.state_dict(), best, optimizer if single else None)
        if single:
            path = self.store.save(
                model,
                self.run.step_dir(step),
                overwrite=True,
                card_fields=self._card_fields(step, val_loss, streams),
                extra=lambda folder: _write_extras(folder, snapshot, streams),
            )
        else:
            extra = sharded.sharded_extras(self.cfg, snapshot, streams.save_tokenizer)
            path = sharded.save(model, optimizer, self.run.step_dir(step), self.world, extra)
        if self.world.main:
            self.run.mark_latest(step)
            self.run.prune(self.cfg.keep_last)
        return path

    def _save_best(self, model: torch.nn.Module, step: int, val_loss: float | None, streams: Streams) -> None:
        if self.cfg.parallel.strategy != "single":  # the weights alone, sharded like the step checkpoints
            sharded.save(model, None, self.run.best, self.world, sharded.sharded_extras(self.cfg, None, streams.save_tokenizer))
            return
        self.store.save(
            model,
            self.run.best,
            overwrite=True,
            card_fields=self._card_fields(step, val_loss, streams),
            extra=streams.save_tokenizer,
        )

    def _card_fields(self, step: int, val_loss: float | None, streams: Streams) -> dict[str, Any]:
        metrics = {"step": float(step)}
        if val_loss is not None:
            metrics["val_loss"] = val_loss
            metrics["val_perplexity"] = math.exp(min(val_loss, 50.0))
        return {
            "name": self.cfg.name or self.cfg.model.name or None,
            "metrics": metrics,
            "tokenizer": "tokenizer.json",
            "training_data": (DataRef(name=streams.name, uri=streams.uri, sha256=streams.sha256),),
        }


def _write_extras(folder: Path, snapshot: train_state.TrainState, streams: Streams) -> None:
    train_state.write(snapshot, folder)
    streams.save_tokenizer(folder)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _to_device(batch: Batch, device: torch.device) -> Batch:
    if device.type == "cpu":
        return batch
    def move(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t.to(device, non_blocking=True)

    return Batch(
        input_ids=batch.input_ids.to(device, non_blocking=True),
        labels=move(batch.labels),
        key_padding_mask=move(batch.key_padding_mask),
        positions=move(batch.positions),
        document_ids=move(batch.document_ids),
    )


def _postfix(row: dict[str, Any]) -> dict[str, str]:
    shown = {"loss": f"{row['train_loss']:.4f}", "tok/s": f"{row['tokens_per_s']:,.0f}"}
    if row.get("mfu") is not None:
        shown["mfu"] = f"{100 * row['mfu']:.1f}%"
    if row.get("val_loss") is not None:
        shown["val"] = f"{row['val_loss']:.4f}"
    return shown
