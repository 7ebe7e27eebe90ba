"""specs.train_memory against what PyTorch holds: the activation formula against the bytes autograd saves for
the backward (counted with saved-tensor hooks, storages once each, parameters left out), and the per-rank
arithmetic of the strategies."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import model
import specs
from specs.train_memory import activation_bytes, training_memory
from train.loss import lm_loss


def train_config(preset: str, *extra: str, **model_fields: object) -> specs.TrainConfig:
    base = specs.load_config("gpt-shakespeare-char", kind="train")
    cfg = specs.apply_overrides(base, ["precision=float32", "data.batch_size=2", "data.seq_len=32", *extra])
    lm = specs.load_config(preset)
    # The formula is for a fused kernel (no T x T scores kept); "auto" would pick by timing, which varies.
    attention = dataclasses.replace(lm.attention, kernel="sdpa")
    return dataclasses.replace(cfg, model=dataclasses.replace(lm, dtype="float32", attention=attention, **model_fields))


def saved_for_backward(cfg: specs.TrainConfig, *, checkpointing: bool = False) -> int:
    from train.wrappers import apply_activation_checkpointing

    torch.manual_seed(0)
    lm = model.build(cfg.model)
    if checkpointing:
        apply_activation_checkpointing(lm)
    ids = torch.randint(0, cfg.model.vocab_size, (cfg.data.batch_size, cfg.data.seq_len))
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = max(storages.get(storage.data_ptr(), 0), storage.nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        lm_loss(lm, specs.Batch(input_ids=ids, labels=ids))
    weights = {p.untyped_storage().data_ptr() for p in lm.parameters()}
    return sum(size for ptr, size in storages.items() if ptr not in weights)


@pytest.mark.parametrize("preset", ["llama-tiny", "gpt-shakespeare-char", "llama-55m", "gemma3-1b"])
def test_activations_are_what_autograd_saves(preset: str) -> None:
    """Within 2% (RoPE's cos/sin tables, ``2 head_dim`` per position and shared by the rows, are left out);
    Gemma 3's block (sandwich norms, QK-norm, offset norm weights) within 3%: ~2.5% of it is not modelled.
    Gemma is cut to 2 layers and a 1024-token vocabulary to stay fast; the per-token terms are its own."""
    cfg = train_config(preset, **({"n_layers": 2, "vocab_size": 1024} if preset == "gemma3-1b" else {}))
    measured = saved_for_backward(cfg)
    assert activation_bytes(cfg, rows=2) == pytest.approx(measured, rel=0.03 if preset == "gemma3-1b" else 0.02)


def test_checkpointing_keeps_only_each_block_input_in_the_forward() -> None:
    cfg = train_config("llama-tiny")
    full, checkpointed = activation_bytes(cfg, rows=2), activation_bytes(cfg, rows=2, checkpointing=True)
    layers, inputs = cfg.model.n_layers, 4 * 2 * 32 * cfg.model.d_model  # a block input: float32, 2 x 32 tokens
    # full = L blocks + tail; checkpointed = L inputs + 1 block + tail: so one block, then the forward's own part
    one_block = (full - checkpointed + layers * inputs) / (layers - 1)
    forward_only = checkpointed - one_block
    assert forward_only == pytest.approx(saved_for_backward(cfg, checkpointing=True), rel=0.02)


def test_strategies_split_the_states_as_described() -> None:
    cfg = train_config("llama-55m", "data.batch_size=8")
    one = training_memory(cfg)
    assert one.weight_bytes == one.gradient_bytes == 4 * one.parameters == one.optimizer_bytes // 2
    ddp = training_memory(cfg, world_size=2, strategy="ddp")
    assert (ddp.weight_bytes, ddp.optimizer_bytes) == (one.weight_bytes, one.optimizer_bytes)
    assert ddp.activation_bytes < one.activation_bytes  # half the rows per rank
    fsdp = [training_memory(cfg, world_size=n, strategy="fsdp2") for n in (2, 8)]
    assert fsdp[0].optimizer_bytes == one.optimizer_bytes // 2 and fsdp[1].optimizer_bytes == one.optimizer_bytes // 8
    assert fsdp[1].total_bytes < fsdp[0].total_bytes < ddp.total_bytes
    with pytest.raises(ValueError, match="single runs on one process"):
        training_memory(cfg, world_size=2, strategy="single")
