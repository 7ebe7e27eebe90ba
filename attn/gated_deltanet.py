"""Gated DeltaNet: a linear-attention token mixer with a fixed-size state (Qwen3-Next's linear layers).

``x (B, T, C)`` goes through::

    in_proj_qkvz -> q, k, v (+ z) ; in_proj_ba -> b, a
    q, k, v -> causal depthwise conv (K taps) -> SiLU -> per-head q, k (Hk heads), v (Hv heads)
    beta = sigmoid(b) ; g = -exp(a_log) * softplus(a + dt_bias)          (per value head and token)
    o = gated delta rule(q, k, v, g, beta)        (unit-length q, k; chunked, or token by token when decoding)
    o -> RMSNorm(o) * weight * SiLU(z) per head -> wo -> (B, T, C)

The projections are laid out flat (``[q | k | v | z]`` and ``[b | a]``, heads in order), so ``q, k, v`` are one
slice that goes straight into the convolution. Qwen3-Next groups the same rows per key head; importing its
weights is a permutation of rows (``tests/attn/test_gated_deltanet.py`` has it).

Decoding state lives in the cache (:class:`specs.RecurrentState`): ``"conv"`` ``(B, 2 Hk Dk + Hv Dv, K - 1)``, the
convolution's last inputs, and ``"recurrent"`` ``(B, Hv, Dk, Dv)`` in float32. A forward with a cache reads
both, continues from them and writes them back.

Padding: a token that may not attend to itself in ``ctx.allow_mask`` (padding in a key-padding mask) is
treated as absent: its input is zeroed and its ``g`` and ``beta`` too, so the recurrent state passes through it
unchanged, wherever it sits. The convolution still shifts over it, so padding is exact only before a row's
first real token (left padding, what ``serve`` builds); padding after real tokens is not supported. Nor are
document masks (packed sequences): the state runs on across documents.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from attn.context import NO_CONTEXT, AttentionContext
from specs.cache import RecurrentState
from specs.deltanet_config import DeltaNetConfig
from specs.tensor_spec import TensorSpec
from tensor.delta_rule import delta_rule_chunked, delta_rule_recurrent
from tensor.masks import self_visible
from tensor.ops import rms_norm
from tensor.short_conv import causal_conv1d

_X = TensorSpec("x", ("B", "T", "C"))


class GatedRMSNorm(nn.Module):
    """``rms_norm(x) * weight * silu(gate)`` over the last dim: the output norm of Gated DeltaNet heads."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)

    def forward(self, x: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        return (rms_norm(x, self.weight, self.eps) * F.silu(gate.float())).to(x.dtype)


class GatedDeltaNet(nn.Module):
    """``x (B, T, C) -> (B, T, C)`` with the same call as :class:`attn.SelfAttention` (``ctx`` carries the cache
    and the allow mask); it has no positions of its own, so it ignores ``ctx.rope``."""

    def __init__(self, cfg: DeltaNetConfig, d_model: int, *, layer_idx: int, norm_eps: float = 1e-6) -> None:
        super().__init__()
        self.cfg = cfg
        self.layer_idx = layer_idx
        self.key_heads, self.value_heads = cfg.n_heads, cfg.value_heads
        self.head_k_dim, self.head_v_dim = cfg.head_k_dim, cfg.value_dim
        self.key_dim = self.key_heads * self.head_k_dim
        self.value_dim = self.value_heads * self.head_v_dim
        self.conv_dim = 2 * self.key_dim + self.value_dim  # channels of the convolution: q, k and v
        self.in_proj_qkvz = nn.Linear(d_model, self.conv_dim + self.value_dim, bias=False)
        self.in_proj_ba = nn.Linear(d_model, 2 * self.value_heads, bias=False)
        self.conv_weight = nn.Parameter(torch.empty(self.conv_dim, cfg.conv_kernel))
        self.dt_bias = nn.Parameter(torch.empty(self.value_heads))
        self.a_log = nn.Parameter(torch.empty(self.value_heads))
        self.norm = GatedRMSNorm(self.head_v_dim, norm_eps)
        self.wo = nn.Linear(self.value_dim, d_model, bias=False)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """The layer's own parameters (the linears are initialised by the model, like every other linear):
        the convolution as ``nn.Conv1d`` does (fan-in ``K``), ``dt_bias = 1`` and ``-exp(a_log)`` spread over
        ``[-16, -0.01]`` (Qwen3-Next), so heads start with decays from slow to fast."""
        bound = self.cfg.conv_kernel**-0.5
        nn.init.uniform_(self.conv_weight, -bound, bound)
        nn.init.ones_(self.dt_bias)
        self.a_log.copy_(torch.empty_like(self.a_log).uniform_(0.01, 16).log())
        self.norm.reset_parameters()

    def state_shapes(self) -> dict[str, tuple[tuple[int, ...], torch.dtype | None]]:
        """Per-row shapes of the decoding state; dtype None means the cache's (the model's) dtype."""
        return {
            "conv": ((self.conv_dim, self.cfg.conv_kernel - 1), None),
            "recurrent": ((self.value_heads, self.head_k_dim, self.head_v_dim), torch.float32),
        }

    def forward(self, x: torch.Tensor, ctx: AttentionContext = NO_CONTEXT) -> torch.Tensor:
        _X.check(x)
        batch, seq = x.shape[:2]
        keep = None
        if ctx.allow_mask is not None:
            keep = self_visible(ctx.allow_mask, batch, seq, ctx.step.q_offset)[..., None]  # (B, T, 1)
            x = x * keep.to(x.dtype)
        state = self._state(ctx)
        conv_in, initial = (None, None) if state is None else (state["conv"], state["recurrent"])
        qkv, z = self.in_proj_qkvz(x).split([self.conv_dim, self.value_dim], dim=-1)
        b, a = self.in_proj_ba(x).chunk(2, dim=-1)
        qkv, conv_state = causal_conv1d(qkv.transpose(1, 2), self.conv_weight, conv_in)
        q, k, v = F.silu(qkv).transpose(1, 2).split([self.key_dim, self.key_dim, self.value_dim], dim=-1)
        beta = b.sigmoid()
        g = -self.a_log.float().exp() * F.softplus(a.float() + self.dt_bias.float())
        if keep is not None:  # padding neither decays nor writes the state
            beta, g = beta * keep, g * keep
        q, k = self._heads(q, self.key_heads), self._heads(k, self.key_heads)
        v, beta, g = self._heads(v, self.value_heads), beta.transpose(1, 2), g.transpose(1, 2)
        if initial is not None and seq == 1:
            o, final = delta_rule_recurrent(q, k, v, g, beta, initial_state=initial, qk_l2norm=self.cfg.qk_l2norm)
        else:
            o, final = delta_rule_chunked(
                q, k, v, g, beta, chunk_size=self.cfg.chunk_size, initial_state=initial, qk_l2norm=self.cfg.qk_l2norm
            )
        if isinstance(ctx.cache, RecurrentState):
            ctx.cache.set_state(self.layer_idx, {"conv": conv_state, "recurrent": final})
        o = self.norm(o.transpose(1, 2), z.unflatten(-1, (self.value_heads, self.head_v_dim)))  # (B, T, Hv, Dv)
        return self.wo(o.flatten(2))

    def _state(self, ctx: AttentionContext) -> Mapping[str, torch.Tensor] | None:
        if ctx.cache is None:
            return None
        if not isinstance(ctx.cache, RecurrentState):
            raise TypeError(
                f"Gated DeltaNet layer {self.layer_idx} keeps a recurrent state, which a {type(ctx.cache).__name__} "
                "cannot hold; build the cache with the model's new_cache (an attn.HybridCache)"
            )
        return ctx.cache.state(self.layer_idx)

    @staticmethod
    def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
        """``(B, T, H * D) -> (B, H, T, D)``."""
        return x.unflatten(-1, (heads, -1)).transpose(1, 2)
