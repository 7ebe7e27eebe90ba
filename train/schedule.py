"""The learning rate at a step, as a pure function of the step: nothing to save, exact on resume."""

from __future__ import annotations

import math

from specs.train_config import ScheduleConfig


def lr_at(step: int, cfg: ScheduleConfig, base_lr: float, max_steps: int) -> float:
    """The learning rate of (0-based) optimizer step ``step``.

    Warmup rises linearly over ``warmup_steps``, ``lr * (step + 1) / (warmup_steps + 1)``, so the first step
    already moves (nanoGPT's warmup). After it, ``cosine`` follows ``min_lr + (lr - min_lr) * (1 + cos(pi *
    r)) / 2`` and ``linear`` ``lr - (lr - min_lr) * r`` for ``r`` the fraction of the decay done, until
    ``decay_steps`` (default ``max_steps``), then stays at ``min_lr``. ``wsd`` holds ``lr`` until the last
    ``decay_fraction`` of the decay steps and decays linearly to ``min_lr`` over them. ``constant`` is ``lr``
    after the warmup.
    """
    warmup, low = cfg.warmup_steps, cfg.min_lr
    end = cfg.decay_steps if cfg.decay_steps is not None else max_steps
    if step < warmup:
        return base_lr * (step + 1) / (warmup + 1)
    if cfg.kind == "constant":
        return base_lr
    if step >= end:
        return low
    if cfg.kind == "wsd":
        decay_start = end - max(1, round(cfg.decay_fraction * (end - warmup)))
        if step < decay_start:
            return base_lr
        done = (step - decay_start) / (end - decay_start)
        return base_lr - (base_lr - low) * done
    done = (step - warmup) / (end - warmup)
    if cfg.kind == "linear":
        return base_lr - (base_lr - low) * done
    return low + (base_lr - low) * 0.5 * (1.0 + math.cos(math.pi * done))
