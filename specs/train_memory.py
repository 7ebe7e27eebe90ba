"""Memory per process of a training run, from its config alone: weights, gradients, AdamW states and
activations under each parallel strategy (``lmplanes`` tables for docs/scaling.md; torch-free, like sizing).

Per rank, with ``P`` parameters, ``N`` ranks, float32 master weights (``TrainConfig`` requires them):

* ``single`` and ``ddp``: weights ``4P``, gradients ``4P`` (DDP's buckets are the gradients themselves:
  ``gradient_as_bucket_view``), AdamW's two moments ``8P``;
* ``fsdp2``: the shards ``4P/N``, ``4P/N`` and ``8P/N``, plus what is unsharded at a time: the root's own
  parameters (embeddings, final norm, head; the root is not resharded after its forward) and two layers' (the
  one running and the one prefetched), in the compute dtype, and one layer's float32 gradients before their
  reduce-scatter.

Activations are the tensors the forward saves for the backward, per token of the rank's micro-batch
(``batch_size / N`` rows of ``seq_len``), counted from the block's structure and held equal to what autograd
saves for the llama and GPT presets by a test (``tests/train/test_memory.py``):

* each norm keeps its input and, for RMSNorm, its normalised output (``2d + 1``; LayerNorm ``d + 2`` with its
  statistics), and the linears after the two pre-norms keep the normalised input (``d`` each): ``6d + 2`` per
  block (LayerNorm ``4d + 4``; sandwich norms add two more norms);
* attention keeps the rotated queries, keys, values, its output and one log-sum-exp per head:
  ``2 q_dim + 2 kv_dim + H`` (a fused kernel: no ``T x T`` scores); QK-norm adds its norms' inputs and outputs;
* the MLP keeps ``4 f`` (gated: gate, up, activation, product) or ``2 f`` (GELU);
* after the blocks: the final norm and the head's input (``3d + 1``, LayerNorm ``2d + 2``), the labels, and the
  float32 logits (``V`` per token) unless the loss is chunked (``B T V > 2^26``: then ``CHUNK_TOKENS`` tokens'
  logits at a time, recomputed in the backward).

With activation checkpointing each block keeps its input (``d``) and one block's activations exist at a time,
recomputed in the backward. Activations are in the autocast dtype (bfloat16: 2 bytes) except the logits; the
sum of all four is an upper bound of the peak, since gradients fill in as activations are freed.

Mixture-of-experts, Gated DeltaNet and encoder-decoder models are not modelled (a ``ValueError`` says so).
"""

from __future__ import annotations

from dataclasses import dataclass

from specs.sizing import layer_parts, parameter_count
from specs.train_config import TrainConfig

CHUNK_ABOVE = 1 << 26  # the train plane's loss chunks above this many logits (train.loss)
CHUNK_TOKENS = 4096
_FP32 = 4


@dataclass(frozen=True, kw_only=True, slots=True)
class TrainingMemory:
    """Bytes per rank of a training step (see the module's documentation)."""

    strategy: str
    world_size: int
    parameters: int
    weight_bytes: int
    gradient_bytes: int
    optimizer_bytes: int
    activation_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.weight_bytes + self.gradient_bytes + self.optimizer_bytes + self.activation_bytes


def training_memory(cfg: TrainConfig, *, world_size: int = 1, strategy: str | None = None,
                    activation_checkpointing: bool | None = None) -> TrainingMemory:
    """The per-rank memory of ``cfg`` on ``world_size`` ranks (``strategy``/``activation_checkpointing``:
    instead of the config's)."""
    model = cfg.model
    if model.moe is not None or model.deltanet is not None or model.architecture != "decoder":
        raise ValueError("training memory is modelled for dense decoders only (no MoE, DeltaNet or encoders)")
    strategy = strategy or cfg.parallel.strategy
    if strategy == "single" and world_size != 1:
        raise ValueError(f"strategy single runs on one process, not {world_size}")
    count = parameter_count(model)
    compute = 2 if cfg.precision == "bfloat16" else _FP32
    if strategy == "fsdp2":
        layer = sum(layer_parts(model, 0).values())
        root = count - model.n_layers * layer
        weights = _FP32 * count // world_size + compute * (root + 2 * layer)
        gradients = _FP32 * count // world_size + _FP32 * layer
        optimizer = 2 * _FP32 * count // world_size
    else:
        weights, gradients, optimizer = _FP32 * count, _FP32 * count, 2 * _FP32 * count
    checkpointing = cfg.activation_checkpointing if activation_checkpointing is None else activation_checkpointing
    return TrainingMemory(
        strategy=strategy,
        world_size=world_size,
        parameters=count,
        weight_bytes=weights,
        gradient_bytes=gradients,
        optimizer_bytes=optimizer,
        activation_bytes=activation_bytes(cfg, rows=cfg.data.batch_size // world_size, checkpointing=checkpointing),
    )


def activation_bytes(cfg: TrainConfig, *, rows: int, checkpointing: bool = False) -> int:
    """Bytes the forward of ``rows`` sequences of ``seq_len`` saves for the backward (see the module)."""
    model = cfg.model
    tokens = rows * cfg.data.seq_len
    width = 2 if cfg.precision == "bfloat16" else _FP32
    d, heads = model.d_model, model.attention.n_heads
    rms = model.norm == "rmsnorm"
    per_norm = 2 * d + 1 if rms else d + 2
    norms = (4 if model.residual == "sandwich" else 2) * per_norm + 2 * d  # + the normalised linear inputs
    q_dim, kv_dim = heads * model.head_dim, model.attention.kv_heads * model.head_dim
    attention = 2 * q_dim + 2 * kv_dim + heads
    if model.attention.qk_norm:  # RMS norms over each head's queries and keys: input and output, one scale each
        attention += 2 * (q_dim + kv_dim) + heads + model.attention.kv_heads
    mlp = (4 if model.mlp.kind in ("swiglu", "geglu") else 2) * model.mlp_hidden
    block = norms + attention + mlp
    blocks = model.n_layers * d + block if checkpointing else model.n_layers * block
    after = (3 * d + 1 if rms else 2 * d + 2) + 2  # the labels: int64, two float32 slots
    chunked = tokens * model.vocab_size > CHUNK_ABOVE
    logits = _FP32 * (CHUNK_TOKENS if chunked else tokens) * model.vocab_size
    return width * tokens * (blocks + after) + logits
