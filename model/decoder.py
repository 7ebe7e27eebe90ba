"""DecoderLM: a decoder-only language model assembled from a ModelConfig.

Covers the GPT style (LayerNorm, GELU, learned or sinusoidal positions, biases, tied embeddings), the
Llama/Qwen style (RMSNorm, SwiGLU, GQA, RoPE, QK-norm) and the Gemma style (scaled embeddings, sandwich norms,
GeGLU, soft-capping, sliding-window layers between global ones) with one forward path::

    ids (B, T) -> tok_embeddings -> embed_scale -> positions -> dropout -> [block] x L -> norm -> lm_head
               -> logit_softcap -> logits (B, T, V)

``embed_scale`` and ``logit_softcap`` are ``nn.Identity`` unless the config sets ``embedding_scale`` /
``final_softcap``.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from attn.context import AttentionContext, ForwardRecord
from attn.gated_deltanet import GatedDeltaNet
from attn.hybrid_cache import HybridCache
from attn.kv_cache import StaticKVCache
from attn.paged_kv_cache import PagedKVCache
from blocks.block import build_block
from blocks.moe import RECORD_KEY, SwiGLUExperts
from blocks.moe_losses import moe_losses
from blocks.norms import RMSNorm, build_norm
from blocks.scaling import scale_or_identity, softcap_or_identity
from model.inputs import check_cache, check_cache_len, check_input_ids, check_positions, default_positions
from model.parallel_plan import LAYER_TP_PLAN
from model.positions import build_local_positions, build_positions
from specs.cache import CacheStep, KVCache, PagedSpec
from specs.model_config import ModelConfig
from specs.protocols import LMOutput, OutputKind
from tensor.init import init_normal_, residual_std


class DecoderLM(nn.Module):
    """Implements :class:`specs.CausalLM` and :class:`specs.ParallelizableModel`."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.d_model)
        self.embed_scale = scale_or_identity(config.embedding_scale)
        self.positions = build_positions(config)
        self.local_positions = build_local_positions(config)  # sliding-window layers' own RoPE base, if any
        self.dropout = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList(build_block(config, i) for i in range(config.n_layers))
        self.norm = build_norm(config) if config.final_norm else nn.Identity()
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.logit_softcap = softcap_or_identity(config.final_softcap)
        self.tie_weights()

    def tie_weights(self) -> None:
        """Share the head's weight with the token embeddings when the config says so. Materialising from the
        meta device (``to_empty``) gives each module its own tensor, so builders call this again afterwards."""
        if self.config.tie_embeddings and isinstance(self.lm_head, nn.Linear):  # an int8 head keeps its own copy
            self.lm_head.weight = self.tok_embeddings.weight

    def forward(
        self,
        input_ids: torch.Tensor,
        *,
        positions: torch.Tensor | None = None,
        cache: KVCache | None = None,
        attn_mask: torch.Tensor | None = None,
        output: OutputKind = "logits",
    ) -> torch.Tensor | LMOutput:
        batch, seq = check_input_ids(input_ids, self.config)
        step = CacheStep(q_offset=0)
        if cache is not None:
            check_cache(cache, self.config, batch)
            step = cache.step(seq)
        if positions is None:
            positions = default_positions(step.q_offset, batch, seq, self.config, input_ids.device)
        else:
            check_positions(positions, batch, seq, self.config)
        x, rope = self.positions(self.embed_scale(self.tok_embeddings(input_ids)), positions)
        _, local_rope = self.local_positions(x, positions)
        x = self.dropout(x)
        # MoE layers report their router statistics here, for this forward's auxiliary losses (never model state).
        record = ForwardRecord() if self.config.moe is not None else None
        ctx = AttentionContext(
            rope=rope, local_rope=local_rope, allow_mask=attn_mask, cache=cache, step=step, record=record
        )
        for layer in self.layers:
            x = layer(x, ctx)
        if cache is not None:
            cache.advance(seq)
        hidden = self.norm(x)
        if output == "logits":
            return self.logit_softcap(self.lm_head(hidden))
        if output not in ("hidden", "all"):
            raise ValueError(f"output must be 'logits', 'hidden' or 'all', got {output!r}")
        aux_losses: dict[str, torch.Tensor] = {}
        metrics: dict[str, torch.Tensor] = {}
        if record is not None and self.config.moe is not None:  # a dense decoder has no auxiliary objectives
            aux_losses, metrics = moe_losses(record.close().get(RECORD_KEY, []), self.config.moe)
        logits = self.logit_softcap(self.lm_head(hidden)) if output == "all" else None
        return LMOutput(hidden=hidden, logits=logits, aux_losses=aux_losses, metrics=metrics)

    def output_head(self) -> nn.Module:
        """Final hidden states ``(..., C)`` -> logits ``(..., V)``: ``lm_head``, then the final soft-cap if any.
        A new container over the model's own modules (no parameters of its own, nothing added to the model)."""
        return nn.Sequential(self.lm_head, self.logit_softcap)

    def new_cache(
        self,
        batch: int,
        max_len: int,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        fixed_shapes: bool = False,
        paged: PagedSpec | None = None,
    ) -> StaticKVCache | PagedKVCache | HybridCache:
        """A cache for ``batch`` rows of up to ``max_len`` tokens (at most the config's ``max_seq_len``).
        ``fixed_shapes=True`` makes every decode step the same shapes, for ``torch.compile``/CUDA graphs;
        ``paged`` makes a :class:`attn.PagedKVCache` with that block size and count (continuous batching).
        A hybrid model (``deltanet``) gets an :class:`attn.HybridCache`, which has no paged form."""
        check_cache_len(max_len, self.config)
        reference = self.tok_embeddings.weight  # float in every form of the model, int8-quantized included
        cfg, dtype, device = self.config, dtype or reference.dtype, device or reference.device
        if cfg.deltanet is not None:
            if paged is not None:
                raise ValueError("a hybrid model's Gated DeltaNet layers keep a fixed-size state per row, which a paged "
                                 "cache does not hold; use new_cache without paged")
            return self._hybrid_cache(batch, max_len, dtype, device, fixed_shapes)
        if paged is None:
            return StaticKVCache(
                n_layers=cfg.n_layers, batch=batch, n_kv_heads=cfg.attention.kv_heads, head_dim=cfg.head_dim,
                max_len=max_len, dtype=dtype, device=device, fixed_shapes=fixed_shapes,
            )
        if fixed_shapes:
            raise ValueError("a paged cache allocates blocks on the host as rows grow, so it has no fixed_shapes mode")
        return PagedKVCache(
            n_layers=cfg.n_layers, batch=batch, n_kv_heads=cfg.attention.kv_heads, head_dim=cfg.head_dim,
            max_len=max_len, block_size=paged.block_size, num_blocks=paged.num_blocks, dtype=dtype, device=device,
        )

    def _hybrid_cache(
        self, batch: int, max_len: int, dtype: torch.dtype, device: torch.device | str, fixed_shapes: bool
    ) -> HybridCache:
        mixers = [layer.attn for layer in self.layers]
        linear = [m for m in mixers if isinstance(m, GatedDeltaNet)]
        return HybridCache(
            n_layers=len(mixers), attention_layers=[i for i, m in enumerate(mixers) if not isinstance(m, GatedDeltaNet)],
            state_shapes=linear[0].state_shapes(), batch=batch, n_kv_heads=self.config.attention.kv_heads,
            head_dim=self.config.head_dim, max_len=max_len, dtype=dtype, device=device, fixed_shapes=fixed_shapes,
        )

    def fsdp_units(self) -> list[nn.Module]:
        return list(self.layers)

    def tp_plan(self) -> dict[str, Literal["colwise", "rowwise"]]:
        return dict(LAYER_TP_PLAN)

    @torch.no_grad()
    def init_weights(self) -> None:
        """GPT-2 initialisation: N(0, init_std) for weights, zero biases, unit norms, and the projections that
        write into the residual stream scaled by ``1 / sqrt(2 * n_layers)``."""
        std = self.config.init_std
        for name, module in self.named_modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                writes_residual = name.endswith((".wo", ".w2", ".proj"))
                init_normal_(module.weight, residual_std(std, self.config.n_layers) if writes_residual else std)
                if isinstance(module, nn.Linear) and module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, SwiGLUExperts):
                module.init_weights(std, residual_std(std, self.config.n_layers))
            elif isinstance(module, (RMSNorm, nn.LayerNorm)):
                module.reset_parameters()  # unit scale, zero bias
            elif isinstance(module, GatedDeltaNet):
                module.reset_parameters()  # its convolution, decay rates and output norm; its linears come next
