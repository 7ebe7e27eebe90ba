"""Mixture-of-Experts feed-forward: a router, routed SwiGLU experts stored as batched weights, optional
always-on shared experts.

``x (B, T, C) -> router -> slots (E, Cap) -> gather tokens (E, Cap, C) -> three batched matmuls ->
weight by the gate -> index_add back to their tokens -> + shared experts``.

There is no Python loop over tokens or experts: every expert runs in one ``bmm`` over its slots (the padded
layout of GShard/Switch; dropless token choice pads to the busiest expert). On this project's CPUs that beat
a loop over experts on contiguous slices (BENCHMARKS.md, ``benchmarks/moe_dispatch.py``).

The layer reports its router statistics into the forward's :class:`attn.context.ForwardRecord` (when the
model collects them); :func:`blocks.moe_losses.moe_losses` turns them into the auxiliary losses.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from attn.context import NO_CONTEXT, AttentionContext
from blocks.mlp import SwiGLU, build_mlp
from blocks.moe_routing import route
from specs.model_config import ModelConfig
from specs.moe_config import MoEConfig

RECORD_KEY = "moe"  # the name MoE layers report under in a ForwardRecord


class SwiGLUExperts(nn.Module):
    """``E`` SwiGLU experts without biases, as ``(E, out, in)`` weights: ``w1`` gate and ``w3`` up
    ``(E, hidden, C)``, ``w2`` down ``(E, C, hidden)`` (each expert's slice is an ``nn.Linear`` weight)."""

    def __init__(self, n_experts: int, d_model: int, hidden: int) -> None:
        super().__init__()
        self.w1 = nn.Parameter(torch.empty(n_experts, hidden, d_model))
        self.w3 = nn.Parameter(torch.empty(n_experts, hidden, d_model))
        self.w2 = nn.Parameter(torch.empty(n_experts, d_model, hidden))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(E, Cap, C)`` tokens per expert -> ``(E, Cap, C)`` each expert's output."""
        hidden = F.silu(torch.bmm(x, self.w1.transpose(1, 2))) * torch.bmm(x, self.w3.transpose(1, 2))
        return torch.bmm(hidden, self.w2.transpose(1, 2))

    @torch.no_grad()
    def init_weights(self, std: float, out_std: float) -> None:
        """Like ``nn.Linear`` weights in the model: N(0, std), the down projection (writing the residual) at ``out_std``."""
        nn.init.normal_(self.w1, std=std)
        nn.init.normal_(self.w3, std=std)
        nn.init.normal_(self.w2, std=out_std)


class SharedExperts(nn.Module):
    """Always-on experts, as one SwiGLU of their summed width, optionally scaled per token by
    ``sigmoid(gate(x))`` (Qwen 2 MoE's ``shared_expert_gate``)."""

    def __init__(self, d_model: int, hidden: int, *, gated: bool) -> None:
        super().__init__()
        self.mlp = SwiGLU(d_model, hidden, bias=False)
        self.gate = nn.Linear(d_model, 1, bias=False) if gated else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.mlp(x)
        return out if self.gate is None else out * torch.sigmoid(self.gate(x))


class MoE(nn.Module):
    """A MoE feed-forward layer (see :class:`specs.MoEConfig` for every choice it makes)."""

    def __init__(self, cfg: MoEConfig, d_model: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.router = nn.Linear(d_model, cfg.n_experts, bias=False)
        self.experts = SwiGLUExperts(cfg.n_experts, d_model, cfg.expert_hidden)
        self.shared = SharedExperts(d_model, cfg.shared_hidden, gated=cfg.shared_expert_gate) if cfg.n_shared_experts else None

    def forward(self, x: torch.Tensor, ctx: AttentionContext = NO_CONTEXT) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        routes = route(self.router(flat), self.cfg)
        if ctx.record is not None:
            ctx.record.add(RECORD_KEY, routes.stats)
        out_slots = self.experts(flat[routes.token])  # (E, Cap, C)
        out_slots = out_slots * routes.weight.to(out_slots.dtype).unsqueeze(-1)
        out = out_slots.new_zeros(flat.shape).index_add(0, routes.token.reshape(-1), out_slots.reshape(-1, flat.shape[-1]))
        if self.shared is not None:
            out = out + self.shared(flat)
        return out.reshape(x.shape[:-1] + out.shape[-1:])

    def extra_repr(self) -> str:
        c = self.cfg
        return f"routing={c.routing}, n_experts={c.n_experts}, top_k={c.top_k}, gate={c.gate}, capacity_factor={c.capacity_factor}"


def build_feed_forward(cfg: ModelConfig, layer_idx: int) -> nn.Module:
    """Layer ``layer_idx``'s feed-forward: a :class:`MoE` where ``cfg.moe`` selects the layer, else ``cfg.mlp``."""
    if cfg.moe is not None and cfg.moe.is_moe_layer(layer_idx):
        return MoE(cfg.moe, cfg.d_model)
    return build_mlp(cfg)
