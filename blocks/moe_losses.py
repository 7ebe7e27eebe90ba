"""The auxiliary losses and metrics of one forward, from what its MoE layers reported.

Both losses average over every MoE layer and token of the forward before they combine: the balance loss is
``n_experts * sum_e mean_l(load_le) * mean_l(prob_le)`` (transformers' ``load_balancing_loss_func`` pools
the layers the same way, so ``aux_loss_weight`` means its ``router_aux_loss_coef``), not a sum of per-layer
losses.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from blocks.moe_routing import RouterStats
from specs.moe_config import MoEConfig


def moe_losses(stats: Sequence[RouterStats], cfg: MoEConfig) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """``(aux_losses, metrics)``: ``moe_balance`` and ``moe_z`` (weighted; present when their weight is set)
    and the detached metric ``moe_dropped`` (the fraction of assignments over capacity, with a capacity)."""
    losses: dict[str, torch.Tensor] = {}
    metrics: dict[str, torch.Tensor] = {}
    if not stats:
        return losses, metrics
    if cfg.aux_loss_weight and stats[0].load is not None:
        load = torch.stack([s.load for s in stats if s.load is not None]).mean(dim=0)
        prob = torch.stack([s.prob for s in stats if s.prob is not None]).mean(dim=0)
        losses["moe_balance"] = cfg.aux_loss_weight * cfg.n_experts * (load * prob).sum()
    if cfg.z_loss_weight:
        losses["moe_z"] = cfg.z_loss_weight * torch.stack([s.z for s in stats if s.z is not None]).mean()
    dropped = [s.dropped for s in stats if s.dropped is not None]
    if dropped:
        metrics["moe_dropped"] = torch.stack(dropped).mean().detach()
    return losses, metrics
