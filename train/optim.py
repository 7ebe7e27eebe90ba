"""AdamW with weight decay on matrices only, in PyTorch's fastest implementation for the device."""

from __future__ import annotations

import torch
from torch import nn

from specs.train_config import OptimizerConfig


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: weight matrices of linear layers decay; norms, biases and embeddings do not.

    Embedding tables are left undecayed even when they are matrices (and so is a head tied to one): decay
    would shrink the rows of rare tokens toward zero between their few updates. Each parameter is listed once,
    whatever names it goes by (tied weights).
    """
    embedding_ids = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for param in model.parameters():  # deduplicated by identity: a tied weight appears once
        if not param.requires_grad:
            continue
        (decay if param.dim() >= 2 and id(param) not in embedding_ids else no_decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, cfg: OptimizerConfig) -> torch.optim.AdamW:
    """AdamW over :func:`parameter_groups`; ``implementation`` picks fused, foreach or the plain loop."""
    device = next(model.parameters()).device
    kind = cfg.implementation
    if kind == "auto":
        kind = "fused" if _fused_supported(device) else "foreach"
    flags = {"fused": kind == "fused", "foreach": kind == "foreach"}
    if flags["fused"] and not _fused_supported(device):
        raise ValueError(f"fused AdamW is not available on {device.type} in this PyTorch; use foreach or auto")
    return torch.optim.AdamW(
        parameter_groups(model, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, **flags
    )


def _fused_supported(device: torch.device) -> bool:
    """Whether PyTorch's fused AdamW runs on ``device`` (CUDA always; CPU since PyTorch 2.4)."""
    try:
        probe = torch.zeros(1, device=device, requires_grad=True)
        torch.optim.AdamW([probe], fused=True)
    except (RuntimeError, ValueError):
        return False
    return True
