"""Checks of what a forward is handed, done once at the model boundary.

Shape and host-known bounds are always checked (they cost nothing). Checks that must read tensor values
(token ids, explicit positions) need a device sync, so they run only while ``specs`` checks are on
(``LMPLANES_CHECKS=0`` or ``specs.set_checks(False)`` turn them off for hot decode loops) and never inside a
``torch.compile`` trace, where they would break the graph.
"""

from __future__ import annotations

import dataclasses

import torch

from specs.cache import KVCache
from specs.errors import InputError, ShapeError
from specs.model_config import ModelConfig
from specs.tensor_spec import TensorSpec, checks_enabled

_IDS = TensorSpec("input_ids", ("B", "T"), dtypes={"int64", "int32"})
_POSITIONS = TensorSpec("positions", ("B", "T"), dtypes={"int64", "int32"})
_PADDING = TensorSpec("key_padding_mask", ("B", "T"), dtypes={"bool"})
_TOKEN_TYPES = TensorSpec("token_type_ids", ("B", "T"), dtypes={"int64", "int32"})
_MEMORY = TensorSpec("memory", ("B", "S", "C"))
_MEMORY_PADDING = TensorSpec("memory_padding_mask", ("B", "S"), dtypes={"bool"})


def _read_values() -> bool:
    return checks_enabled() and not torch.compiler.is_compiling()


def check_input_ids(input_ids: torch.Tensor, cfg: ModelConfig, *, name: str = "input_ids") -> tuple[int, int]:
    """``(B, T)`` of valid token ids; returns ``(B, T)``. ``name``: the argument's name, for the messages
    (an encoder-decoder checks ``decoder_input_ids`` too)."""
    dims = (_IDS if name == _IDS.name else dataclasses.replace(_IDS, name=name)).check(input_ids)
    batch, seq = dims["B"], dims["T"]
    if seq == 0 or batch == 0:
        raise InputError(f"{name} has shape {[batch, seq]}: no tokens to run; pass at least one token per row")
    if _read_values():
        low, high = (int(x) for x in torch.aminmax(input_ids))
        if low < 0 or high >= cfg.vocab_size:
            bad = ((input_ids < 0) | (input_ids >= cfg.vocab_size)).nonzero()[0].tolist()
            value = int(input_ids[bad[0], bad[1]])
            raise InputError(
                f"{name}: token id {value} at {bad} is outside the vocabulary of {cfg.name or 'the model'} "
                f"(ids 0..{cfg.vocab_size - 1}, vocab_size {cfg.vocab_size})"
            )
    return batch, seq


def check_cache(cache: KVCache, cfg: ModelConfig, batch: int) -> None:
    """Refuse a cache built for another model or another batch size."""
    layout = cache.layout
    want = (cfg.n_layers, cfg.attention.kv_heads, cfg.head_dim)
    got = (layout.n_layers, layout.n_kv_heads, layout.head_dim)
    if got != want:
        raise ShapeError(
            f"the cache was built for {got[0]} layers x {got[1]} kv heads x head dim {got[2]}, but "
            f"{cfg.name or 'this model'} has {want[0]} x {want[1]} x {want[2]}; build it with this model's new_cache"
        )
    if layout.batch != batch:
        raise ShapeError(f"the cache holds {layout.batch} rows but input_ids has {batch}; new_cache(batch={batch}, ...)")
    check_cache_len(layout.max_len, cfg)


def check_cache_len(max_len: int, cfg: ModelConfig) -> None:
    if max_len > cfg.max_seq_len:
        raise InputError(
            f"a cache of max_len {max_len} exceeds max_seq_len {cfg.max_seq_len} of {cfg.name or 'the model'}; "
            f"use max_len <= {cfg.max_seq_len}, or raise max_seq_len in the config{_rope_hint(cfg)}"
        )


def default_positions(q_offset: int | torch.Tensor, batch: int, seq: int, cfg: ModelConfig,
                      device: torch.device) -> torch.Tensor:
    """``q_offset + arange(T)`` per row, refusing (on the host, without a sync) positions past max_seq_len."""
    if isinstance(q_offset, int):
        if q_offset + seq > cfg.max_seq_len:
            where = f" after {q_offset} cached tokens" if q_offset else ""
            raise InputError(
                f"input of {seq} tokens{where} reaches position {q_offset + seq - 1}, beyond max_seq_len "
                f"{cfg.max_seq_len} of {cfg.name or 'the model'}; shorten the input or raise max_seq_len in the "
                f"config{_rope_hint(cfg)}"
            )
        return torch.arange(q_offset, q_offset + seq, device=device).expand(batch, -1)
    # Per-row offsets come from a cache whose max_len was checked against max_seq_len, and the cache refuses
    # to overflow, so these positions are in range.
    return q_offset[:, None] + torch.arange(seq, device=device)


def check_positions(positions: torch.Tensor, batch: int, seq: int, cfg: ModelConfig) -> None:
    """Explicit positions: ``(B, T)`` integers in ``[0, max_seq_len)``."""
    _POSITIONS.check(positions, B=batch, T=seq)
    if _read_values():
        low, high = (int(x) for x in torch.aminmax(positions))
        if low < 0 or high >= cfg.max_seq_len:
            raise InputError(
                f"positions range over {low}..{high}, outside 0..{cfg.max_seq_len - 1} (max_seq_len of "
                f"{cfg.name or 'the model'}); raise max_seq_len in the config{_rope_hint(cfg)}"
            )


def check_key_padding_mask(mask: torch.Tensor, batch: int, seq: int) -> None:
    """``(B, T)`` bool, True = padding (``specs.Batch``). An integer or float mask is refused rather than guessed:
    Hugging Face's ``attention_mask`` means the opposite (1 = token)."""
    if mask.dtype != torch.bool:
        raise InputError(
            f"key_padding_mask must be bool with True = padding, got {str(mask.dtype).removeprefix('torch.')}; from a "
            "Hugging Face attention_mask (1 = token) pass attention_mask == 0"
        )
    _PADDING.check(mask, B=batch, T=seq)


def check_token_type_ids(token_type_ids: torch.Tensor, batch: int, seq: int, cfg: ModelConfig) -> None:
    """``(B, T)`` integers in ``[0, type_vocab_size)``; refused outright by a model without token types."""
    if cfg.type_vocab_size == 0:
        raise InputError(
            f"token_type_ids were given, but {cfg.name or 'the model'} has no token types (type_vocab_size 0); "
            "leave them out"
        )
    _TOKEN_TYPES.check(token_type_ids, B=batch, T=seq)
    if _read_values():
        low, high = (int(x) for x in torch.aminmax(token_type_ids))
        if low < 0 or high >= cfg.type_vocab_size:
            raise InputError(
                f"token_type_ids range over {low}..{high}, outside 0..{cfg.type_vocab_size - 1} (type_vocab_size "
                f"of {cfg.name or 'the model'})"
            )


def check_memory(memory: torch.Tensor, batch: int, cfg: ModelConfig) -> int:
    """An encoder output ``(B, S, C)`` for a decoder batch of ``batch`` rows; returns ``S``."""
    if memory.dim() == 3 and memory.shape[0] != batch:
        raise ShapeError(
            f"memory holds {memory.shape[0]} rows but decoder_input_ids has {batch}; encode the same batch the "
            "decoder runs (one source per row)"
        )
    return _MEMORY.check(memory, B=batch, C=cfg.d_model)["S"]


def check_memory_padding_mask(mask: torch.Tensor, batch: int, source_len: int) -> None:
    """``(B, S)`` bool, True = padding, over the encoder's ``S`` source tokens."""
    if mask.dtype != torch.bool:
        raise InputError(
            f"memory_padding_mask must be bool with True = padding, got {str(mask.dtype).removeprefix('torch.')}; "
            "from a Hugging Face attention_mask (1 = token) pass attention_mask == 0"
        )
    _MEMORY_PADDING.check(mask, B=batch, S=source_len)


def _rope_hint(cfg: ModelConfig) -> str:
    if cfg.positions == "rope":
        return " (and, past the length it was trained at, rope.scaling with a factor)"
    if cfg.positions == "learned":
        return " (learned positions: the position table grows with it, so the model must be retrained)"
    return ""
