"""Self-attention with MHA/GQA/MQA, optional QK-norm, RoPE, soft-capping, a logit scale and a sliding window.

The kernel is chosen by name through :mod:`kernel.registry` for every call, so the module has one forward
path whatever back-end runs it.
"""

from __future__ import annotations

import torch

from attn.context import NO_CONTEXT, AttentionContext
from attn.dispatch import attend
from attn.projections import AttentionProjections
from specs.attention import AttentionCall
from specs.model_config import AttentionConfig
from specs.tensor_spec import TensorSpec
from tensor.rope import apply_rope

_X = TensorSpec("x", ("B", "T", "C"))


class SelfAttention(AttentionProjections):
    """``x (B, T, C) -> (B, T, C)``. Keys/values have ``n_kv_heads`` heads, shared by groups of query heads.

    The layer's window is ``cfg.layer_window(layer_idx)``: with ``global_every`` some layers slide and the others
    attend globally (Gemma 2, 3), fixed when the layer is built."""

    def __init__(
        self,
        cfg: AttentionConfig,
        d_model: int,
        *,
        layer_idx: int,
        causal: bool = True,
        norm_eps: float = 1e-5,
        norm_offset: float = 0.0,
    ) -> None:
        super().__init__(cfg, d_model, norm_eps=norm_eps, norm_offset=norm_offset)
        self.layer_idx = layer_idx
        self.causal = causal
        self.window = cfg.layer_window(layer_idx)
        self.windowed = self.window is not None  # picks the local RoPE table (rope.local_theta)

    def forward(self, x: torch.Tensor, ctx: AttentionContext = NO_CONTEXT) -> torch.Tensor:
        _X.check(x)
        q, k, v = self.project_qkv(x)
        q = self.q_norm(self.split_heads(q, self.n_heads))  # (B, Hq, T, D)
        k = self.k_norm(self.split_heads(k, self.n_kv_heads))  # (B, Hkv, T, D)
        v = self.split_heads(v, self.n_kv_heads)
        rope = ctx.rope_for(self.windowed)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        if ctx.cache is not None:
            k, v = ctx.cache.update(self.layer_idx, k, v)  # every key the new queries may see
        call = AttentionCall(
            q=q,
            k=k,
            v=v,
            allow_mask=ctx.allow_mask,
            causal=self.causal,
            window=self.window,
            scale=self.cfg.scale,
            softcap=self.cfg.softcap,
            dropout_p=self.cfg.dropout if self.training else 0.0,
            q_offset=ctx.step.q_offset,
            kv_lens=ctx.step.kv_lens,
            block_table=ctx.step.block_table,
        )
        return self.merge_heads(attend(self.cfg.kernel, call))
