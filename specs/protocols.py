"""What application planes (train, serve, eval, export, rag) may assume about a model.

They never import the compute spine: any ``torch.nn.Module`` with these methods will do. Building one from a
config is the caller's job (``pack``/``examples``) or a factory registered by name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch

    from specs.cache import KVCache
    from specs.model_config import ModelConfig


@runtime_checkable
class CausalLM(Protocol):
    """A decoder-only language model: ``(B, T)`` token ids -> ``(B, T, V)`` logits.

    ``positions`` defaults to ``cache.seq_len + arange(T)`` (or ``arange(T)`` without a cache).
    ``attn_mask`` is a boolean allow mask (True = may attend) broadcastable to ``(B, 1, T, Tk)``, where ``Tk``
    counts the cached tokens plus the new ones; the causal rule is always applied on top of it.
    ``aux_losses()`` returns the auxiliary losses of the most recent forward (MoE balance and z losses), keyed
    by name and already weighted; a dense model returns an empty dict. Trainers add their sum to the loss.
    """

    config: ModelConfig

    def __call__(
        self,
        input_ids: torch.Tensor,
        *,
        positions: torch.Tensor | None = None,
        cache: KVCache | None = None,
        attn_mask: torch.Tensor | None = None,
    ) -> torch.Tensor: ...

    def new_cache(
        self, batch: int, max_len: int, *, dtype: torch.dtype | None = None, device: torch.device | str | None = None
    ) -> KVCache: ...

    def aux_losses(self) -> dict[str, torch.Tensor]: ...


@runtime_checkable
class EncoderModel(Protocol):
    """An encoder-only model (BERT family): ``(B, T)`` ids -> ``(B, T, C)`` hidden states."""

    config: ModelConfig

    def __call__(
        self,
        input_ids: torch.Tensor,
        *,
        key_padding_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor: ...


@runtime_checkable
class Seq2SeqLM(Protocol):
    """An encoder-decoder model (T5/BART). The encoder runs once per request; its output ``memory (B, S, C)``
    is passed to every decoder step, whose cache also keeps the cross-attention keys/values."""

    config: ModelConfig

    def encode(self, input_ids: torch.Tensor, *, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor: ...

    def decode(
        self,
        decoder_input_ids: torch.Tensor,
        memory: torch.Tensor,
        *,
        memory_padding_mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
    ) -> torch.Tensor: ...

    def new_cache(
        self, batch: int, max_len: int, *, dtype: torch.dtype | None = None, device: torch.device | str | None = None
    ) -> KVCache: ...


@runtime_checkable
class ParallelizableModel(Protocol):
    """What a trainer needs to apply FSDP, tensor parallelism and activation checkpointing from outside.

    ``fsdp_units()`` lists the submodules to wrap one by one (the transformer layers); ``tp_plan()`` maps
    module-name globs (relative to the model) to ``"colwise"`` or ``"rowwise"``.
    """

    def fsdp_units(self) -> list[torch.nn.Module]: ...

    def tp_plan(self) -> dict[str, Literal["colwise", "rowwise"]]: ...
