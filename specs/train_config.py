"""TrainConfig: one training run — the model, the data, the optimizer and schedule, and how the run behaves.

The serialised form nests the model config. In a file or preset, ``model:`` may instead name a model preset
or a config file (``model: gpt-shakespeare-char``); loading resolves it, so a run's saved config is complete.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from specs.config_io import FieldProblem, config_kind
from specs.model_config import ModelConfig


@dataclass(frozen=True, kw_only=True, slots=True)
class DataConfig:
    """Where the training tokens come from and how they are cut into batches.

    ``corpus``: ``"tinyshakespeare"`` (the bundled corpus with nanoGPT's character vocabulary and its 90/10
    split by position) or a directory written by ``lmplanes data build``. ``sampling``: ``random`` windows
    (nanoGPT style: a uniformly drawn start per row) or ``sequential`` packed sequences with document ids.
    """

    corpus: str = "tinyshakespeare"
    seq_len: int
    batch_size: int
    sampling: Literal["random", "sequential"] = "random"

    def __post_init__(self) -> None:
        for name in ("seq_len", "batch_size"):
            if getattr(self, name) < 1:
                raise FieldProblem(name, f"must be >= 1, got {getattr(self, name)}")
        if not self.corpus:
            raise FieldProblem("corpus", "must name the bundled corpus or a built shard directory")


@dataclass(frozen=True, kw_only=True, slots=True)
class OptimizerConfig:
    """AdamW. Weight decay applies to matrices only: never to norms, biases or embeddings.

    ``implementation``: PyTorch's ``fused`` or ``foreach`` AdamW, a plain per-parameter loop (``single``), or
    ``auto`` (fused where PyTorch offers it for the device, else foreach).
    """

    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    weight_decay: float = 0.1
    implementation: Literal["auto", "fused", "foreach", "single"] = "auto"

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise FieldProblem("lr", f"must be > 0, got {self.lr}")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise FieldProblem("betas", f"must be two numbers in [0, 1), got {list(self.betas)}")
        if self.eps <= 0:
            raise FieldProblem("eps", f"must be > 0, got {self.eps}")
        if self.weight_decay < 0:
            raise FieldProblem("weight_decay", f"must be >= 0, got {self.weight_decay}")


@dataclass(frozen=True, kw_only=True, slots=True)
class ScheduleConfig:
    """The learning rate over steps: linear warmup from 0, then ``cosine`` or ``linear`` decay to ``min_lr`` at
    ``decay_steps`` (default: the run's ``max_steps``), ``wsd`` (warmup, stable at ``lr``, then a linear decay to
    ``min_lr`` over the last ``decay_fraction`` of the decay steps), or ``constant``."""

    kind: Literal["cosine", "linear", "wsd", "constant"] = "cosine"
    warmup_steps: int = 0
    decay_steps: int | None = None
    min_lr: float = 0.0
    decay_fraction: float = 0.2

    def __post_init__(self) -> None:
        if self.warmup_steps < 0:
            raise FieldProblem("warmup_steps", f"must be >= 0, got {self.warmup_steps}")
        if self.decay_steps is not None and self.decay_steps <= self.warmup_steps:
            raise FieldProblem("decay_steps", f"({self.decay_steps}) must exceed warmup_steps ({self.warmup_steps})")
        if self.min_lr < 0:
            raise FieldProblem("min_lr", f"must be >= 0, got {self.min_lr}")
        if not 0.0 < self.decay_fraction <= 1.0:
            raise FieldProblem("decay_fraction", f"must be in (0, 1], got {self.decay_fraction}")


@dataclass(frozen=True, kw_only=True, slots=True)
class ParallelConfig:
    """How a run spreads over processes (one per GPU, or several on a CPU), applied from outside the model.

    ``strategy``: ``single`` (one process), ``ddp`` (every rank holds the model; gradients are averaged) or
    ``fsdp2`` (parameters, gradients and optimizer states sharded over the ranks with
    ``torch.distributed.fsdp.fully_shard``, one unit per transformer layer). ``data.batch_size`` is the global
    micro-batch: each rank takes ``batch_size / world_size`` of its rows, so a config means the same run on any
    number of processes and a checkpoint resumes on another one. ``cpu_offload`` (fsdp2): parameters, gradients
    and optimizer states live in CPU memory and the optimizer steps there. ``backend``: ``auto`` is NCCL on
    CUDA, gloo on the CPU.
    """

    strategy: Literal["single", "ddp", "fsdp2"] = "single"
    cpu_offload: bool = False
    backend: Literal["auto", "gloo", "nccl"] = "auto"

    def __post_init__(self) -> None:
        if self.cpu_offload and self.strategy != "fsdp2":
            raise FieldProblem("cpu_offload", f"needs strategy fsdp2 (the strategy is {self.strategy})")


@config_kind("train", version=1)
@dataclass(frozen=True, kw_only=True, slots=True)
class TrainConfig:
    """A training run. ``precision`` is the autocast dtype of the forward (parameters and optimizer state stay
    float32); ``compile`` and ``activation_checkpointing`` are applied to the model from outside."""

    KIND: ClassVar[str]  # set by config_kind
    VERSION: ClassVar[int]

    name: str = ""
    model: ModelConfig
    data: DataConfig
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)  # an absent section means one process
    max_steps: int
    grad_accum_steps: int = 1
    grad_clip: float | None = 1.0
    precision: Literal["float32", "bfloat16"] = "float32"
    compile: bool = False
    activation_checkpointing: bool = False
    eval_every: int = 250
    eval_batches: int = 20
    log_every: int = 1
    checkpoint_every: int | None = None  # None: at every evaluation
    keep_last: int = 2
    keep_best: bool = True
    seed: int = 1337
    device: str = "auto"  # "auto": CUDA when available, else CPU

    def __post_init__(self) -> None:
        for name in ("max_steps", "grad_accum_steps", "eval_every", "eval_batches", "log_every"):
            if getattr(self, name) < 1:
                raise FieldProblem(name, f"must be >= 1, got {getattr(self, name)}")
        if self.keep_last < 1:
            raise FieldProblem("keep_last", f"must be >= 1 (the latest checkpoint is always kept), got {self.keep_last}")
        if self.checkpoint_every is not None and self.checkpoint_every < 1:
            raise FieldProblem("checkpoint_every", f"must be >= 1, got {self.checkpoint_every}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise FieldProblem("grad_clip", f"must be > 0 (or null for no clipping), got {self.grad_clip}")
        if self.data.seq_len > self.model.max_seq_len:
            raise FieldProblem(
                "data.seq_len", f"({self.data.seq_len}) exceeds model.max_seq_len ({self.model.max_seq_len})"
            )
        if self.model.dtype != "float32":
            raise FieldProblem(
                "model.dtype",
                f"is {self.model.dtype}, but training keeps float32 parameters and optimizer states; set "
                f"model.dtype=float32 and precision=bfloat16 for bf16 compute",
            )
        if self.device not in ("auto", "cpu", "cuda", "mps") and not self.device.startswith("cuda:"):
            raise FieldProblem("device", f"must be auto, cpu, cuda, cuda:N or mps, got {self.device!r}")
