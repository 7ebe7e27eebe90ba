"""What application planes (train, serve, eval, export, rag) may assume about a model.

They never import the compute spine: any ``torch.nn.Module`` with these methods will do. Building one from a
config is the caller's job (``pack``/``examples``) or a factory registered by name.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, overload, runtime_checkable

if TYPE_CHECKING:
    import torch

    from specs.cache import KVCache, PagedSpec
    from specs.generation_config import GenerationConfig
    from specs.model_config import ModelConfig


OutputKind = Literal["logits", "hidden", "all"]


@dataclass(frozen=True, slots=True)
class LMOutput:
    """What a causal LM's forward returns when asked for more than logits (``output="hidden"`` or ``"all"``).

    ``hidden``: ``(B, T, C)`` final hidden states, after the final norm: exactly what the output head reads, so
    ``model.output_head()(hidden)`` gives the logits. A trainer that wants a chunked cross-entropy (long
    sequences, big vocabularies) asks for ``"hidden"`` and applies the head chunk by chunk, never holding the
    full ``(B, T, V)`` logits in float32. ``logits``: ``(B, T, V)``, None for ``"hidden"``.
    ``aux_losses``: auxiliary losses of this forward (MoE load-balancing and router z losses), keyed by name
    and already weighted; empty for dense models. Trainers add their sum to the loss. They are returned with
    the output they belong to, never kept as state, so activation-checkpoint recomputation and pipeline
    stages cannot mix them up. ``metrics``: detached measurements of this forward for logging, never part of
    the loss (MoE with a capacity: ``moe_dropped``, the fraction of expert assignments dropped).
    """

    hidden: torch.Tensor
    logits: torch.Tensor | None = None
    aux_losses: dict[str, torch.Tensor] = field(default_factory=dict)
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)


@runtime_checkable
class CausalLM(Protocol):
    """A decoder-only language model: ``(B, T)`` token ids -> ``(B, T, V)`` logits.

    ``positions`` (the positions RoPE or a position table sees) defaults to each row's cached token count
    plus ``arange(T)`` (``arange(T)`` without a cache). ``attn_mask`` is a boolean allow mask (True = may
    attend) broadcastable to ``(B, 1, T, Tk)``, where ``Tk`` is the key length the cache's ``update`` returns
    (the cached tokens plus the new ones); the causal rule is always applied on top of it. With a cache, the
    forward runs ``step``/``update``/``advance`` on it (see :mod:`specs.cache`). ``output`` picks the return
    value: ``"logits"`` (the tensor), ``"hidden"`` or ``"all"`` (an :class:`LMOutput`).
    ``new_cache(..., paged=PagedSpec(...))`` makes the paged cache a continuous-batching server runs on.

    ``output_head()`` is the module that maps final hidden states to logits (for chunked losses).
    """

    config: ModelConfig

    @overload
    def __call__(
        self,
        input_ids: torch.Tensor,
        *,
        positions: torch.Tensor | None = None,
        cache: KVCache | None = None,
        attn_mask: torch.Tensor | None = None,
        output: Literal["logits"] = "logits",
    ) -> torch.Tensor: ...

    @overload
    def __call__(
        self,
        input_ids: torch.Tensor,
        *,
        positions: torch.Tensor | None = None,
        cache: KVCache | None = None,
        attn_mask: torch.Tensor | None = None,
        output: Literal["hidden", "all"],
    ) -> LMOutput: ...

    def new_cache(
        self,
        batch: int,
        max_len: int,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        fixed_shapes: bool = False,
        paged: PagedSpec | None = None,
    ) -> KVCache:
        """A contiguous cache, or with ``paged`` a :class:`specs.PagedCache` of that block size and count."""
        ...

    def output_head(self) -> torch.nn.Module: ...


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
class TextEmbedder(Protocol):
    """Texts -> one vector each: an encoder with its tokenizer and pooling, as retrieval (``rag``) and the
    server's ``/v1/embeddings`` use it. ``embed`` returns ``(N, dim)`` float32 on the CPU (unit length when the
    model's recipe normalises); a text longer than ``max_tokens`` tokens is truncated. ``count_tokens`` gives
    the tokens each text is read as, special tokens and truncation included (usage figures)."""

    dim: int
    max_tokens: int

    def embed(self, texts: Sequence[str]) -> torch.Tensor: ...

    def count_tokens(self, texts: Sequence[str]) -> list[int]: ...


@runtime_checkable
class ChatGenerator(Protocol):
    """Chat messages -> the assistant's reply: a chat model with its tokenizer and chat template, as
    retrieval-augmented generation (``rag``) uses it. ``messages`` are ``{"role", "content"}`` mappings; the
    reply ends before any of the ``stop`` strings."""

    def chat(self, messages: Sequence[Mapping[str, str]], cfg: GenerationConfig, *, stop: Sequence[str] = ()) -> str: ...


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
class ModelStore(Protocol):
    """How application planes build, save and load models without importing the compute spine: the ``model``
    plane provides one (``model.STORE``) and a composition root (``pack``, ``examples``) hands it over.

    ``save`` writes a checkpoint directory (DESIGN.md section 4): ``card_fields`` go into its model card,
    ``extra(dir)`` adds files (``train_state/``, a tokenizer) before the manifest is written; ``verify`` returns
    one line per problem, empty when the checkpoint is intact.
    """

    def build(self, cfg: ModelConfig, *, device: torch.device | str = "cpu") -> torch.nn.Module: ...

    def save(
        self,
        model: torch.nn.Module,
        path: str | os.PathLike[str],
        *,
        overwrite: bool = False,
        card_fields: Mapping[str, Any] | None = None,
        extra: Callable[[Path], None] | None = None,
    ) -> Path: ...

    def load(
        self, path: str | os.PathLike[str], *, device: torch.device | str = "cpu", dtype: torch.dtype | None = None
    ) -> torch.nn.Module: ...

    def verify(self, path: str | os.PathLike[str]) -> list[str]: ...


MODEL_STORES = "lmplanes.model_stores"


def installed_store(name: str = "lmplanes") -> ModelStore:
    """The model store an installed package registers under the ``lmplanes.model_stores`` entry point (the
    model plane's, for lmplanes itself), so application planes load checkpoints without importing model code."""
    from importlib import metadata

    found = {ep.name: ep for ep in metadata.entry_points(group=MODEL_STORES)}
    if name not in found:
        raise LookupError(f"no model store {name!r} is installed (entry points {MODEL_STORES}: {sorted(found)})")
    store = found[name].load()
    if not isinstance(store, ModelStore):
        raise TypeError(f"{found[name].value} is not a specs.ModelStore")
    return store


@runtime_checkable
class ParallelizableModel(Protocol):
    """What a trainer needs to apply FSDP, tensor parallelism and activation checkpointing from outside.

    ``fsdp_units()`` lists the submodules to wrap one by one (the transformer layers); ``tp_plan()`` maps
    module-name globs (relative to the model) to ``"colwise"`` or ``"rowwise"``.
    """

    def fsdp_units(self) -> list[torch.nn.Module]: ...

    def tp_plan(self) -> dict[str, Literal["colwise", "rowwise"]]: ...
