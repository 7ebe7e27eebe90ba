"""DeltaNetConfig: the Gated DeltaNet layers of a hybrid model (Qwen3-Next style).

``ModelConfig.deltanet`` set makes the model hybrid: ``hybrid_ratio`` Gated DeltaNet layers per softmax-attention
layer, counted from the bottom, so 3 gives DeltaNet at layers 0, 1, 2, attention at 3, DeltaNet at 4, 5, 6, ...
(Qwen3-Next's ``full_attention_interval = hybrid_ratio + 1``).
"""

from __future__ import annotations

from dataclasses import dataclass

from specs.config_io import FieldProblem


@dataclass(frozen=True, kw_only=True, slots=True)
class DeltaNetConfig:
    """Gated DeltaNet token mixer: ``n_heads`` query/key heads of ``head_k_dim``, ``n_value_heads`` value heads of
    ``head_v_dim`` (a multiple of ``n_heads``: each key head serves a group of value heads), a causal depthwise
    convolution of ``conv_kernel`` taps over queries, keys and values, and the chunked delta rule over chunks of
    ``chunk_size`` tokens in training and prefill. ``qk_l2norm``: unit-length queries and keys (Qwen3-Next)."""

    n_heads: int
    head_k_dim: int
    n_value_heads: int | None = None  # None: n_heads
    head_v_dim: int | None = None  # None: head_k_dim
    conv_kernel: int = 4
    chunk_size: int = 64
    qk_l2norm: bool = True
    hybrid_ratio: int = 3

    def __post_init__(self) -> None:
        for name in ("n_heads", "head_k_dim", "n_value_heads", "head_v_dim", "conv_kernel", "chunk_size", "hybrid_ratio"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise FieldProblem(name, f"must be >= 1, got {value}")
        if self.value_heads % self.n_heads:
            raise FieldProblem(
                "n_value_heads", f"must be a multiple of n_heads ({self.n_heads}), got {self.n_value_heads}"
            )

    @property
    def value_heads(self) -> int:
        return self.n_value_heads or self.n_heads

    @property
    def value_dim(self) -> int:
        return self.head_v_dim or self.head_k_dim

    def is_attention_layer(self, layer: int) -> bool:
        """Whether layer ``layer`` (0-based) is a softmax-attention layer; the others are Gated DeltaNet."""
        return (layer + 1) % (self.hybrid_ratio + 1) == 0

    def layer_parameters(self, d_model: int) -> int:
        """Parameters of one Gated DeltaNet layer (see ``attn.GatedDeltaNet``)."""
        keys, values = self.n_heads * self.head_k_dim, self.value_heads * self.value_dim
        projections = d_model * (2 * keys + 2 * values) + d_model * 2 * self.value_heads + values * d_model
        return projections + (2 * keys + values) * self.conv_kernel + 2 * self.value_heads + self.value_dim
