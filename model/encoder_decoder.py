"""EncoderDecoderLM: a sequence-to-sequence (T5/BART style) model assembled from a ModelConfig.

The encoder runs once per request; each decoder block attends causally to the target, then to the encoder
output (the memory), then runs its MLP::

    source ids (B, S) -> tok_embeddings -> embed_scale -> encoder.positions -> encoder.embedding_norm -> dropout
                      -> [bidirectional block] x encoder_layers -> encoder.norm -> memory (B, S, C)
    target ids (B, T) -> tok_embeddings -> embed_scale -> decoder.positions -> decoder.embedding_norm -> dropout
                      -> [self-attn, cross-attn(memory), MLP] x n_layers -> decoder.norm -> lm_head
                      -> logits_bias -> logit_softcap -> logits (B, T, V)

One token embedding serves the encoder, the decoder and (under ``tie_embeddings``) the head. BART is
``residual: post``, LayerNorm with biases, ``positions: learned`` with ``position_offset: 2``,
``embedding_norm: true``, ``final_norm: false``, ``logits_bias: true``; a Llama-style encoder-decoder is
``residual: pre``, RMSNorm, RoPE, SwiGLU, GQA with a final norm on each side.

Cached decoding: ``new_cache`` gives a :class:`attn.Seq2SeqKVCache`. The first forward with it projects the
memory to every layer's cross-attention keys/values and stores them (:class:`specs.MemoryKV`); later
forwards read them, so neither the encoder nor the projections run again for the request.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch
from torch import nn

from attn.context import AttentionContext
from attn.cross_attention import CrossAttention
from attn.seq2seq_cache import Seq2SeqKVCache
from blocks.block import build_block
from blocks.cross_block import build_cross_block
from blocks.norms import RMSNorm, build_norm
from blocks.scaling import scale_or_identity, softcap_or_identity
from model.inputs import (
    check_cache,
    check_cache_len,
    check_input_ids,
    check_key_padding_mask,
    check_memory,
    check_memory_padding_mask,
    check_positions,
    default_positions,
)
from model.parallel_plan import LAYER_TP_PLAN
from model.positions import build_positions
from specs.cache import CacheStep, KVCache, MemoryKV
from specs.errors import InputError
from specs.model_config import ModelConfig
from specs.protocols import LMOutput, OutputKind
from tensor.init import init_normal_, residual_std
from tensor.masks import padding_mask

_CROSS_TP_PLAN: dict[str, Literal["colwise", "rowwise"]] = {
    "decoder.layers.*.cross_attn.wq": "colwise",
    "decoder.layers.*.cross_attn.wk": "colwise",
    "decoder.layers.*.cross_attn.wv": "colwise",
    "decoder.layers.*.cross_attn.wo": "rowwise",
}


class Stack(nn.Module):
    """One side of the model: its own positions, embedding norm, blocks and final norm (the token embedding
    is the model's, shared by both sides)."""

    def __init__(self, cfg: ModelConfig, layers: list[nn.Module]) -> None:
        super().__init__()
        self.positions = build_positions(cfg)
        self.embedding_norm = build_norm(cfg) if cfg.embedding_norm else nn.Identity()
        self.dropout = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList(layers)
        self.norm = build_norm(cfg) if cfg.final_norm else nn.Identity()

    def embed(
        self, x: torch.Tensor, positions: torch.Tensor
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
        """Scaled token embeddings -> the first block's input, and the RoPE table (None without RoPE)."""
        x, rope = self.positions(x, positions)
        return self.dropout(self.embedding_norm(x)), rope


class LogitsBias(nn.Module):
    """A fixed ``(1, V)`` bias added to the logits (BART's ``final_logits_bias``): a buffer, so training leaves
    it as loaded, as transformers does."""

    bias: torch.Tensor

    def __init__(self, vocab_size: int) -> None:
        super().__init__()
        self.register_buffer("bias", torch.zeros(1, vocab_size))

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        return logits + self.bias


class EncoderDecoderLM(nn.Module):
    """Implements :class:`specs.Seq2SeqLM` and :class:`specs.ParallelizableModel`."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.architecture != "encoder_decoder":
            raise ValueError(f"EncoderDecoderLM builds architecture 'encoder_decoder', got {config.architecture!r}")
        self.config = config
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.d_model)
        self.embed_scale = scale_or_identity(config.embedding_scale)
        # The encoder's blocks see a config whose depth is the encoder's, so their DropPath rates rise to
        # drop_path over the encoder's own layers.
        encoder_cfg = dataclasses.replace(config, n_layers=config.n_encoder_layers)
        self.encoder = Stack(config, [build_block(encoder_cfg, i, causal=False) for i in range(config.n_encoder_layers)])
        self.decoder = Stack(config, [build_cross_block(config, i) for i in range(config.n_layers)])
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.logits_bias = LogitsBias(config.vocab_size) if config.logits_bias else nn.Identity()
        self.logit_softcap = softcap_or_identity(config.final_softcap)
        self.tie_weights()

    def tie_weights(self) -> None:
        """Share the head's weight with the token embeddings when the config says so. Materialising from the
        meta device (``to_empty``) gives each module its own tensor, so builders call this again afterwards."""
        if self.config.tie_embeddings:
            self.lm_head.weight = self.tok_embeddings.weight

    # --------------------------------------------------------------------------------------------- encoder

    def encode(self, input_ids: torch.Tensor, *, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Source ids ``(B, S)`` -> memory ``(B, S, C)``. ``key_padding_mask``: ``(B, S)`` bool, True = padding
        (no token attends to it; pass the same mask to the decoder as ``memory_padding_mask``). Positions are
        ``0..S-1`` in every row, so pad on the right."""
        batch, seq = check_input_ids(input_ids, self.config)
        positions = default_positions(0, batch, seq, self.config, input_ids.device)  # refuses S > max_seq_len
        allow = None
        if key_padding_mask is not None:
            check_key_padding_mask(key_padding_mask, batch, seq)
            allow = padding_mask(key_padding_mask)  # (B, 1, 1, S), True = may attend
        x, rope = self.encoder.embed(self.embed_scale(self.tok_embeddings(input_ids)), positions)
        # The step is given, not left to its default: torch.compile cannot rebuild a default dataclass instance.
        ctx = AttentionContext(rope=rope, allow_mask=allow, step=CacheStep(q_offset=0))
        for layer in self.encoder.layers:
            x = layer(x, ctx)
        return self.encoder.norm(x)

    # --------------------------------------------------------------------------------------------- decoder

    def forward(
        self,
        decoder_input_ids: torch.Tensor,
        *,
        input_ids: torch.Tensor | None = None,
        memory: torch.Tensor | None = None,
        memory_padding_mask: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
        cache: KVCache | None = None,
        attn_mask: torch.Tensor | None = None,
        output: OutputKind = "logits",
    ) -> torch.Tensor | LMOutput:
        """Target ids ``(B, T)`` -> logits ``(B, T, V)`` (or an :class:`specs.LMOutput`, as in
        :class:`specs.CausalLM`), given the source one of three ways: ``input_ids`` (encoded here), ``memory``
        (from :meth:`encode`), or neither when ``cache`` already holds the projected memory of this request.

        ``memory_padding_mask``: ``(B, S)`` bool, True = a padded source token, needed on every call (the cache
        keeps the memory's keys/values, not the mask). ``positions`` and ``attn_mask`` (an allow mask over the
        decoder's own keys) are those of :class:`specs.CausalLM`. With a cache the forward runs
        ``step``/``update``/``advance`` on it, and the first call projects the memory into it; a memory handed
        to a later call must have the held one's shape and is not projected again (``cache.reset()`` forgets the
        held memory, for a new request).
        """
        batch, seq = check_input_ids(decoder_input_ids, self.config, name="decoder_input_ids")
        if input_ids is not None:
            if memory is not None:
                raise InputError("pass the source as input_ids (encoded here) or as memory (from encode), not both")
            memory = self.encode(input_ids, key_padding_mask=memory_padding_mask)
        held = self._held_memory(cache, batch)
        source_len = self._source_len(memory, held, batch)
        memory_allow = None
        if memory_padding_mask is not None:
            check_memory_padding_mask(memory_padding_mask, batch, source_len)
            memory_allow = padding_mask(memory_padding_mask)
        step = CacheStep(q_offset=0)
        if cache is not None:
            step = cache.step(seq)  # refuses to decode past the cache's max_len before anything is written
        if positions is None:
            positions = default_positions(step.q_offset, batch, seq, self.config, decoder_input_ids.device)
        else:
            check_positions(positions, batch, seq, self.config)
        memory_kv = held if held is not None else self._project_memory(memory, cache)
        x, rope = self.decoder.embed(self.embed_scale(self.tok_embeddings(decoder_input_ids)), positions)
        ctx = AttentionContext(rope=rope, allow_mask=attn_mask, cache=cache, step=step)
        for layer, kv in zip(self.decoder.layers, memory_kv):
            x = layer(x, ctx, kv, memory_allow)
        if cache is not None:
            cache.advance(seq)
        hidden = self.decoder.norm(x)
        if output == "logits":
            return self.output_head()(hidden)
        if output not in ("hidden", "all"):
            raise ValueError(f"output must be 'logits', 'hidden' or 'all', got {output!r}")
        return LMOutput(hidden=hidden, logits=self.output_head()(hidden) if output == "all" else None)

    def decode(
        self,
        decoder_input_ids: torch.Tensor,
        memory: torch.Tensor | None,
        *,
        memory_padding_mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """:class:`specs.Seq2SeqLM`'s decoder step: ``forward(decoder_input_ids, memory=memory, ...)``."""
        logits = self(decoder_input_ids, memory=memory, memory_padding_mask=memory_padding_mask, cache=cache)
        assert isinstance(logits, torch.Tensor)  # output="logits"
        return logits

    def output_head(self) -> nn.Module:
        """Final decoder hidden states ``(..., C)`` -> logits ``(..., V)``: ``lm_head``, the fixed logits bias
        and the final soft-cap when the config has them. A new container over the model's own modules."""
        return nn.Sequential(self.lm_head, self.logits_bias, self.logit_softcap)

    def new_cache(
        self,
        batch: int,
        max_len: int,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        fixed_shapes: bool = False,
    ) -> Seq2SeqKVCache:
        """A cache for ``batch`` rows of up to ``max_len`` target tokens (at most ``max_seq_len``), which also
        holds the projected memory. ``fixed_shapes`` as in :class:`attn.StaticKVCache`."""
        check_cache_len(max_len, self.config)
        reference = self.lm_head.weight
        cfg = self.config
        return Seq2SeqKVCache(
            n_layers=cfg.n_layers, batch=batch, n_kv_heads=cfg.attention.kv_heads, head_dim=cfg.head_dim,
            max_len=max_len, dtype=dtype or reference.dtype, device=device or reference.device,
            fixed_shapes=fixed_shapes,
        )

    # --------------------------------------------------------------------------------------------- memory

    def _held_memory(self, cache: KVCache | None, batch: int) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
        """Every decoder layer's memory keys/values from ``cache``, or None when it holds none yet."""
        if cache is None:
            return None
        check_cache(cache, self.config, batch)
        if not isinstance(cache, MemoryKV):
            raise InputError(
                f"a {type(cache).__name__} has no room for the encoder memory; build the cache with this model's "
                "new_cache"
            )
        held = [cache.memory(i) for i in range(self.config.n_layers)]
        return None if any(kv is None for kv in held) else [kv for kv in held if kv is not None]

    def _source_len(
        self, memory: torch.Tensor | None, held: list[tuple[torch.Tensor, torch.Tensor]] | None, batch: int
    ) -> int:
        if memory is not None:
            source_len = check_memory(memory, batch, self.config)
            if held is not None and held[0][0].shape[2] != source_len:
                raise InputError(
                    f"memory has {source_len} source tokens but the cache holds a memory of {held[0][0].shape[2]}; "
                    "call cache.reset() before decoding a new request"
                )
            return source_len
        if held is None:
            raise InputError(
                "no source: pass input_ids (to encode) or memory (from encode), or a cache that already holds "
                "this request's memory"
            )
        return int(held[0][0].shape[2])

    def _project_memory(
        self, memory: torch.Tensor | None, cache: KVCache | None
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each decoder layer's cross-attention keys/values of ``memory``, written into ``cache`` when given."""
        assert memory is not None  # _source_len refused a call with neither memory nor a held one
        projected = []
        for i, layer in enumerate(self.decoder.layers):
            cross = layer.cross_attn
            assert isinstance(cross, CrossAttention)
            k, v = cross.project_memory(memory)
            if isinstance(cache, MemoryKV):
                cache.set_memory(i, k, v)
                held = cache.memory(i)
                assert held is not None
                k, v = held  # the cache's dtype, as later steps will read them
            projected.append((k, v))
        return projected

    # --------------------------------------------------------------------------------------------- training

    def fsdp_units(self) -> list[nn.Module]:
        return [*self.encoder.layers, *self.decoder.layers]

    def tp_plan(self) -> dict[str, Literal["colwise", "rowwise"]]:
        plan: dict[str, Literal["colwise", "rowwise"]] = {}
        for side in ("encoder", "decoder"):
            plan.update({f"{side}.{name}": how for name, how in LAYER_TP_PLAN.items()})
        return {**plan, **_CROSS_TP_PLAN}

    @torch.no_grad()
    def init_weights(self) -> None:
        """N(0, init_std) for weights, zero biases (and logits bias), unit norms. Pre-norm models scale the
        projections that write into the residual stream by ``1 / sqrt(2 * n_layers)`` (GPT-2); post-norm ones
        do not (every sum is normalised right away, as BART and BERT initialise)."""
        std = self.config.init_std
        scaled = residual_std(std, self.config.n_layers) if self.config.residual == "pre" else std
        for name, module in self.named_modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                init_normal_(module.weight, scaled if name.endswith((".wo", ".w2", ".proj")) else std)
                if isinstance(module, nn.Linear) and module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, (RMSNorm, nn.LayerNorm)):
                module.reset_parameters()  # unit scale, zero bias
            elif isinstance(module, LogitsBias):
                module.bias.zero_()
