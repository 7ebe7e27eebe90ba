"""EncoderLM: an encoder-only (BERT style) model assembled from a ModelConfig.

One forward path, bidirectional attention, padding given as a key mask::

    ids (B, T) -> tok_embeddings (+ token types) -> positions -> embedding_norm -> dropout
               -> [non-causal block] x L -> norm -> hidden (B, T, C)  [-> mlm_head -> logits (B, T, V)]

BERT itself is ``positions: learned``, ``type_vocab_size: 2``, ``embedding_norm: true``, ``residual: post``,
``final_norm: false``, LayerNorm with biases, exact GELU and biases everywhere; ``head: mlm`` adds the masked-LM
head, whose decoder shares the token embeddings under ``tie_embeddings``.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from attn.context import AttentionContext
from blocks.block import build_block
from blocks.norms import RMSNorm, build_norm
from model.inputs import check_input_ids, check_key_padding_mask, check_token_type_ids, default_positions
from model.parallel_plan import LAYER_TP_PLAN
from model.positions import build_positions
from specs.model_config import ModelConfig
from tensor.init import init_normal_
from tensor.masks import padding_mask
from tensor.ops import softcap


class MLMHead(nn.Module):
    """BERT's masked-LM head: the transform (``dense -> GELU -> norm``), then ``decoder`` to the vocabulary with a
    bias of its own. Under ``tie_embeddings`` the decoder's weight is the token embedding matrix."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.d_model, cfg.d_model, bias=cfg.mlp.bias)
        self.norm = build_norm(cfg)
        self.decoder = nn.Linear(cfg.d_model, cfg.vocab_size, bias=True)
        self.approximate = cfg.mlp.gelu_approximate  # the GELU of the blocks (BERT: exact)
        self.cap = cfg.final_softcap

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self.decoder(self.norm(F.gelu(self.dense(hidden), approximate=self.approximate)))
        return logits if self.cap is None else softcap(logits, self.cap)


class EncoderLM(nn.Module):
    """Implements :class:`specs.EncoderModel` and :class:`specs.ParallelizableModel`."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.architecture != "encoder":
            raise ValueError(f"EncoderLM builds architecture 'encoder', got {config.architecture!r}")
        self.config = config
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.d_model)
        self.embedding_scale = config.embedding_scale
        # Token types (segments A/B) are a learned table like the positions; a model without them has none.
        self.token_types = nn.Embedding(config.type_vocab_size, config.d_model) if config.type_vocab_size else None
        self.positions = build_positions(config)
        self.embedding_norm = build_norm(config) if config.embedding_norm else nn.Identity()
        self.dropout = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList(build_block(config, i, causal=False) for i in range(config.n_layers))
        self.norm = build_norm(config) if config.final_norm else nn.Identity()
        self.mlm_head = MLMHead(config) if config.head == "mlm" else None
        self.tie_weights()

    def tie_weights(self) -> None:
        """Share the MLM decoder's weight with the token embeddings when the config says so. Materialising from
        the meta device (``to_empty``) gives each module its own tensor, so builders call this again afterwards."""
        if self.config.tie_embeddings and self.mlm_head is not None:
            self.mlm_head.decoder.weight = self.tok_embeddings.weight

    def forward(
        self,
        input_ids: torch.Tensor,
        *,
        key_padding_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``(B, T)`` ids -> ``(B, T, C)`` hidden states (after the final norm, what ``output_head()`` reads).

        ``key_padding_mask``: ``(B, T)`` bool, True = padding; no token attends to a padded one (padded
        positions still get hidden states, which pooling leaves out). ``token_type_ids``: ``(B, T)`` segment
        ids, all 0 when omitted. Positions are ``0..T-1`` in every row, as BERT has them, so pad on the right.
        """
        batch, seq = check_input_ids(input_ids, self.config)
        positions = default_positions(0, batch, seq, self.config, input_ids.device)  # refuses T > max_seq_len
        allow = None
        if key_padding_mask is not None:
            check_key_padding_mask(key_padding_mask, batch, seq)
            allow = padding_mask(key_padding_mask)  # (B, 1, 1, T), True = may attend
        if token_type_ids is not None:
            check_token_type_ids(token_type_ids, batch, seq, self.config)
        x = self.tok_embeddings(input_ids)
        if self.embedding_scale is not None:
            x = x * self.embedding_scale
        # Summed in BERT's order (words + types, then positions), so imported models match transformers closely.
        if self.token_types is not None:
            x = x + (self.token_types.weight[0] if token_type_ids is None else self.token_types(token_type_ids))
        x, rope = self.positions(x, positions)
        x = self.dropout(self.embedding_norm(x))
        ctx = AttentionContext(rope=rope, allow_mask=allow)
        for layer in self.layers:
            x = layer(x, ctx)
        return self.norm(x)

    def output_head(self) -> nn.Module:
        """Hidden states ``(..., C)`` -> MLM logits ``(..., V)``; only a ``head: mlm`` model has one."""
        if self.mlm_head is None:
            raise ValueError(
                f"{self.config.name or 'this encoder'} has head 'none': it returns hidden states only; build it "
                "with head: mlm for masked-LM logits"
            )
        return self.mlm_head

    def fsdp_units(self) -> list[nn.Module]:
        return list(self.layers)

    def tp_plan(self) -> dict[str, Literal["colwise", "rowwise"]]:
        return dict(LAYER_TP_PLAN)

    @torch.no_grad()
    def init_weights(self) -> None:
        """BERT's initialisation: N(0, init_std) for every linear and embedding weight, zero biases (the MLM
        decoder's included), unit norms. Unlike the decoder's GPT-2 scheme, no residual projection is scaled down
        with depth: in a post-norm block every sum is normalised right away."""
        std = self.config.init_std
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                init_normal_(module.weight, std)
                if isinstance(module, nn.Linear) and module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, (RMSNorm, nn.LayerNorm)):
                module.reset_parameters()  # unit scale, zero bias
