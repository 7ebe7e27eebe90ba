"""MoE routing: from router logits to expert *slots*, the one layout both routings hand to the experts.

Slots are ``(E, C)``: expert ``e``'s slot ``c`` holds token ``token[e, c]`` with gate weight ``weight[e, c]``.
Token choice fills each expert's slots in priority order up to its capacity (empty slots: token 0, weight 0,
so they add nothing and get no gradient); expert choice fills them with each expert's best tokens. The experts
then run as three batched matmuls over ``(E, C, ·)`` (:class:`blocks.moe.SwiGLUExperts`).

Router scores are taken in float32 whatever the activations' dtype (as transformers does for Mixtral and
Qwen MoE): a softmax over a handful of experts in bfloat16 flips top-k choices.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from specs.moe_config import MoEConfig


@dataclass(frozen=True, slots=True)
class Routes:
    """Expert slots ``token``/``weight`` ``(E, C)`` and the statistics the auxiliary losses need."""

    token: torch.Tensor  # (E, C) int64
    weight: torch.Tensor  # (E, C) float32, differentiable
    stats: RouterStats


@dataclass(frozen=True, slots=True)
class RouterStats:
    """One MoE layer's contribution to the auxiliary losses and metrics of a forward (None when unused).

    ``load``: ``(E,)`` share of tokens that chose each expert (sums to ``top_k``; no gradient); ``prob``:
    ``(E,)`` mean router probability per expert (differentiable); ``z``: mean ``logsumexp(logits) ** 2``;
    ``dropped``: fraction of (token, choice) assignments over capacity.
    """

    load: torch.Tensor | None = None
    prob: torch.Tensor | None = None
    z: torch.Tensor | None = None
    dropped: torch.Tensor | None = None


def route(logits: torch.Tensor, cfg: MoEConfig) -> Routes:
    """Slots for ``logits`` ``(N, E)`` (the router's output for ``N`` tokens) under ``cfg``'s routing."""
    logits = logits.float()
    z = torch.logsumexp(logits, dim=-1).square().mean() if cfg.z_loss_weight else None
    if cfg.routing == "expert_choice":
        return _expert_choice(logits, cfg, z)
    return _token_choice(logits, cfg, z)


def _token_choice(logits: torch.Tensor, cfg: MoEConfig, z: torch.Tensor | None) -> Routes:
    n_tokens, n_experts = logits.shape
    scores = logits.softmax(dim=-1) if cfg.gate == "softmax" else logits.sigmoid()
    chosen, expert = scores.topk(cfg.top_k, dim=-1)  # (N, k)
    if cfg.normalize_top_k:
        chosen = chosen / chosen.sum(dim=-1, keepdim=True)
    # Assignments in priority order: every token's first choice, then every token's second choice, ...
    expert_flat = expert.t().reshape(-1)
    token_flat = torch.arange(n_tokens, device=logits.device).repeat(cfg.top_k)
    weight_flat = chosen.t().reshape(-1)
    one_hot = F.one_hot(expert_flat, n_experts)
    position = (one_hot.cumsum(dim=0) * one_hot).sum(dim=-1) - 1  # rank of the assignment within its expert
    counts = one_hot.sum(dim=0)
    # Dropless: as many slots as the busiest expert needs (one host sync for the shape).
    capacity = cfg.capacity(n_tokens) if cfg.capacity_factor is not None else int(counts.max())
    keep = position < capacity
    where = (expert_flat[keep], position[keep])
    token = torch.zeros(n_experts, capacity, dtype=torch.long, device=logits.device).index_put(where, token_flat[keep])
    weight = logits.new_zeros(n_experts, capacity).index_put(where, weight_flat[keep])
    load = prob = dropped = None
    if cfg.aux_loss_weight:
        load = counts.float() / n_tokens
        prob = (scores if cfg.gate == "softmax" else scores / scores.sum(dim=-1, keepdim=True)).mean(dim=0)
    if cfg.capacity_factor is not None:
        dropped = (~keep).sum().float() / keep.numel()
    return Routes(token=token, weight=weight, stats=RouterStats(load=load, prob=prob, z=z, dropped=dropped))


def _expert_choice(logits: torch.Tensor, cfg: MoEConfig, z: torch.Tensor | None) -> Routes:
    scores = logits.softmax(dim=-1)  # (N, E): how much each token wants each expert
    weight, token = scores.t().topk(cfg.capacity(logits.shape[0]), dim=-1)  # each expert's best tokens
    return Routes(token=token, weight=weight, stats=RouterStats(z=z))
