"""The four linear maps every attention layer has, and the head split/merge around the kernel."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.module import _global_forward_hooks, _global_forward_pre_hooks

from attn.rms_norm import build_rms_norm
from kernel.registry import AUTO, KernelUnavailable, available, capabilities
from specs.model_config import AttentionConfig


def check_kernel_supports(cfg: AttentionConfig) -> None:
    """Fail when the layer is built, not at its first forward, if the named kernel is unknown or lacks a
    feature the config always uses. (Dtype, device and shape are checked per call by the registry.)"""
    if cfg.kernel == AUTO:
        return
    lacking = sorted(cfg.kernel_features() - capabilities(cfg.kernel).features)  # unknown name: KernelUnavailable
    if lacking:
        able = [n for n in available() if cfg.kernel_features() <= capabilities(n).features]
        raise KernelUnavailable(
            f"attention kernel {cfg.kernel!r} lacks {', '.join(lacking)}, which this config uses; "
            f"kernels that have it: {', '.join(able) or 'none'} (or 'auto')"
        )


class AttentionProjections(nn.Module):
    """``wq``/``wk``/``wv`` into heads, ``wo`` back to the model width, and the optional QK-norm of the
    query/key heads (an RMSNorm of the model's form: ``norm_offset`` as in ``ModelConfig.norm_weight_offset``).
    ``wq``/``wk``/``wv`` carry a bias when ``cfg.bias``, ``wo`` when ``cfg.output_bias`` (Qwen 2: only the
    first three). Subclasses define ``forward``."""

    def __init__(
        self, cfg: AttentionConfig, d_model: int, *, norm_eps: float = 1e-5, norm_offset: float = 0.0
    ) -> None:
        super().__init__()
        check_kernel_supports(cfg)
        self.cfg = cfg
        self.n_heads, self.n_kv_heads = cfg.n_heads, cfg.kv_heads
        self.head_dim = cfg.head_dim or d_model // cfg.n_heads
        self.wq = nn.Linear(d_model, self.n_heads * self.head_dim, bias=cfg.bias)
        self.wk = nn.Linear(d_model, self.n_kv_heads * self.head_dim, bias=cfg.bias)
        self.wv = nn.Linear(d_model, self.n_kv_heads * self.head_dim, bias=cfg.bias)
        self.wo = nn.Linear(self.n_heads * self.head_dim, d_model, bias=cfg.output_bias)
        self.q_norm = build_rms_norm(self.head_dim, norm_eps, norm_offset) if cfg.qk_norm else nn.Identity()
        self.k_norm = build_rms_norm(self.head_dim, norm_eps, norm_offset) if cfg.qk_norm else nn.Identity()

    def project_qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``wq(x), wk(x), wv(x)``; under autocast with gradients recorded (mixed-precision training) and with
        three plain ``nn.Linear`` layers, as one product over their concatenated weights, split after: one GEMM
        and one weight-gradient GEMM instead of three small ones each, ~8% of a bfloat16 shakespeare-char training
        step on a 2-core CPU (BENCHMARKS.md). Autocast copies the weights into the compute dtype on every call
        anyway, so there the concatenation costs neither time nor saved memory; elsewhere it would add a saved
        copy of the weights (full-precision training) or a weight copy per decode step (inference), so the
        layers are called. Layers with hooks (tensor parallelism shards them and redistributes in hooks) or of
        another type (int8) are always called."""
        linears = (self.wq, self.wk, self.wv)
        fuse = torch.is_grad_enabled() and torch.is_autocast_enabled(x.device.type)
        if not fuse or not all(_plain_linear(m) for m in linears):
            return self.wq(x), self.wk(x), self.wv(x)
        weight = torch.cat([m.weight for m in linears])
        bias = None if self.wq.bias is None else torch.cat([m.bias for m in linears])
        q, k, v = F.linear(x, weight, bias).split([m.out_features for m in linears], dim=-1)
        return q, k, v

    def split_heads(self, projected: torch.Tensor, n_heads: int) -> torch.Tensor:
        """``(B, T, H * D) -> (B, H, T, D)``."""
        batch, seq, _ = projected.shape
        # -1, not n_heads: under tensor parallelism a rank holds only its shard of the heads.
        return projected.view(batch, seq, -1, self.head_dim).transpose(1, 2)

    def merge_heads(self, out: torch.Tensor) -> torch.Tensor:
        """Kernel output ``(B, Hq, T, D)`` -> ``wo`` applied to ``(B, T, Hq * D)``."""
        batch, _, seq, _ = out.shape
        return self.wo(out.transpose(1, 2).reshape(batch, seq, -1))


def _plain_linear(module: nn.Module) -> bool:
    """An ``nn.Linear`` whose call would run nothing but ``F.linear`` (no hook of its own or of every module)."""
    hooks = (module._forward_hooks, module._forward_pre_hooks, _global_forward_hooks, _global_forward_pre_hooks)
    return type(module) is nn.Linear and not any(hooks)
