"""The four linear maps every attention layer has, and the head split/merge around the kernel."""

from __future__ import annotations

import torch
from torch import nn

from attn.qk_norm import QKNorm
from specs.model_config import AttentionConfig


class AttentionProjections(nn.Module):
    """``wq``/``wk``/``wv`` into heads, ``wo`` back to the model width, and the optional QK-norm of the
    query/key heads. Subclasses define ``forward``."""

    def __init__(self, cfg: AttentionConfig, d_model: int, *, norm_eps: float = 1e-6) -> None:
        super().__init__()
        self.cfg = cfg
        self.n_heads, self.n_kv_heads = cfg.n_heads, cfg.kv_heads
        self.head_dim = cfg.head_dim or d_model // cfg.n_heads
        self.wq = nn.Linear(d_model, self.n_heads * self.head_dim, bias=cfg.bias)
        self.wk = nn.Linear(d_model, self.n_kv_heads * self.head_dim, bias=cfg.bias)
        self.wv = nn.Linear(d_model, self.n_kv_heads * self.head_dim, bias=cfg.bias)
        self.wo = nn.Linear(self.n_heads * self.head_dim, d_model, bias=cfg.bias)
        self.q_norm = QKNorm(self.head_dim, norm_eps) if cfg.qk_norm else nn.Identity()
        self.k_norm = QKNorm(self.head_dim, norm_eps) if cfg.qk_norm else nn.Identity()

    def split_heads(self, projected: torch.Tensor, n_heads: int) -> torch.Tensor:
        """``(B, T, H * D) -> (B, H, T, D)``."""
        batch, seq, _ = projected.shape
        return projected.view(batch, seq, n_heads, self.head_dim).transpose(1, 2)

    def merge_heads(self, out: torch.Tensor) -> torch.Tensor:
        """Kernel output ``(B, Hq, T, D)`` -> ``wo`` applied to ``(B, T, Hq * D)``."""
        batch, _, seq, _ = out.shape
        return self.wo(out.transpose(1, 2).reshape(batch, seq, self.n_heads * self.head_dim))
