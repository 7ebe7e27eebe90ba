"""Cross-attention: queries from the decoder stream, keys/values from an encoder's output (the memory).

The memory is projected once per request with :meth:`CrossAttention.project_memory`; every decoder step
then reuses those keys/values, which is what an encoder-decoder cache stores.
"""

from __future__ import annotations

import torch

from attn.dispatch import attend
from attn.projections import AttentionProjections
from specs.attention import AttentionCall
from specs.tensor_spec import TensorSpec

_X = TensorSpec("x", ("B", "T", "C"))
_MEMORY = TensorSpec("memory", ("B", "S", "C"))


class CrossAttention(AttentionProjections):
    """``x (B, T, C)`` attends to all allowed positions of an encoder memory ``(B, S, C)``; no causal rule."""

    def project_memory(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``memory (B, S, C)`` -> keys and values ``(B, Hkv, S, D)``."""
        _MEMORY.check(memory)
        k = self.k_norm(self.split_heads(self.wk(memory), self.n_kv_heads))
        return k, self.split_heads(self.wv(memory), self.n_kv_heads)

    def forward(
        self,
        x: torch.Tensor,
        memory_kv: tuple[torch.Tensor, torch.Tensor],
        *,
        memory_allow_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``memory_kv`` comes from :meth:`project_memory`; ``memory_allow_mask`` is ``(B, 1, 1, S)``, True = real."""
        _X.check(x)
        k, v = memory_kv
        call = AttentionCall(
            q=self.q_norm(self.split_heads(self.wq(x), self.n_heads)),
            k=k,
            v=v,
            allow_mask=memory_allow_mask,
            scale=self.cfg.scale,
            softcap=self.cfg.softcap,
            dropout_p=self.cfg.dropout if self.training else 0.0,
        )
        return self.merge_heads(attend(self.cfg.kernel, call))
