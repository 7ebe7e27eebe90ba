"""ModelConfig and its nested parts (attention, RoPE, MLP).

Sub-configs exist only when used: ``rope`` is ``None`` unless ``positions == "rope"``. Every choice is a
string literal, never a class, so the config stays plain data that loads without torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from specs.config_io import FieldProblem, config_kind, register_migration
from specs.kernel_names import kernel_name_problem


@dataclass(frozen=True, kw_only=True, slots=True)
class RoPEConfig:
    """Rotary position embedding, in the rotate-half layout Hugging Face Llama uses.

    ``scaling`` stretches the usable context: ``linear`` divides positions by ``factor`` (position
    interpolation); ``ntk`` raises the base to ``theta * factor ** (d / (d - 2))`` (NTK-aware scaling).
    """

    theta: float = 10000.0
    scaling: Literal["none", "linear", "ntk"] = "none"
    factor: float = 1.0

    def __post_init__(self) -> None:
        if self.theta <= 0:
            raise FieldProblem("theta", f"must be > 0, got {self.theta}")
        if self.factor < 1.0:
            raise FieldProblem("factor", f"must be >= 1, got {self.factor}")
        if self.scaling == "none" and self.factor != 1.0:
            raise FieldProblem("factor", f"is {self.factor} but scaling is 'none'; set scaling to 'linear' or 'ntk'")


@dataclass(frozen=True, kw_only=True, slots=True)
class AttentionConfig:
    """Self-attention: MHA when ``n_kv_heads == n_heads``, GQA when it divides it, MQA when it is 1."""

    n_heads: int
    n_kv_heads: int | None = None  # None: same as n_heads (MHA)
    head_dim: int | None = None  # None: d_model // n_heads
    bias: bool = False
    qk_norm: bool = False  # RMSNorm over the head dim of q and k, before RoPE
    softcap: float | None = None  # attention logits -> softcap * tanh(logits / softcap)
    window: int | None = None  # sliding window: a query sees the last `window` keys, itself included
    dropout: float = 0.0
    kernel: str = "auto"  # a name in kernel.registry, or "auto"

    def __post_init__(self) -> None:
        if self.n_heads < 1:
            raise FieldProblem("n_heads", f"must be >= 1, got {self.n_heads}")
        if self.n_kv_heads is not None:
            if self.n_kv_heads < 1:
                raise FieldProblem("n_kv_heads", f"must be >= 1, got {self.n_kv_heads}")
            if self.n_heads % self.n_kv_heads:
                raise FieldProblem(
                    "n_kv_heads", f"n_heads ({self.n_heads}) must be divisible by n_kv_heads ({self.n_kv_heads})"
                )
        if self.head_dim is not None and self.head_dim < 1:
            raise FieldProblem("head_dim", f"must be >= 1, got {self.head_dim}")
        if self.softcap is not None and self.softcap <= 0:
            raise FieldProblem("softcap", f"must be > 0, got {self.softcap}")
        if self.window is not None and self.window < 1:
            raise FieldProblem("window", f"must be >= 1, got {self.window}")
        if not 0.0 <= self.dropout < 1.0:
            raise FieldProblem("dropout", f"must be in [0, 1), got {self.dropout}")
        if (problem := kernel_name_problem(self.kernel)) is not None:
            raise FieldProblem("kernel", problem)

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    def kernel_features(self) -> frozenset[str]:
        """The kernel features (:data:`specs.attention.FEATURES`) every call of a layer with this config needs,
        whatever its input: a named kernel lacking one of them is refused when the layer is built."""
        needed = {"softcap": self.softcap is not None, "window": self.window is not None, "dropout": self.dropout > 0}
        return frozenset(name for name, need in needed.items() if need)


@dataclass(frozen=True, kw_only=True, slots=True)
class MLPConfig:
    """Feed-forward: ``gelu`` is fc -> GELU -> proj; ``swiglu`` is down(silu(gate(x)) * up(x))."""

    kind: Literal["gelu", "swiglu"] = "gelu"
    hidden: int | None = None  # None: 4 * d_model
    bias: bool = False
    gelu_approximate: Literal["none", "tanh"] = "none"

    def __post_init__(self) -> None:
        if self.hidden is not None and self.hidden < 1:
            raise FieldProblem("hidden", f"must be >= 1, got {self.hidden}")


@config_kind("model", version=2)
@dataclass(frozen=True, kw_only=True, slots=True)
class ModelConfig:
    """A transformer language model. ``architecture`` picks the assembler in the ``model`` plane."""

    KIND: ClassVar[str]  # set by config_kind
    VERSION: ClassVar[int]


    name: str = ""
    architecture: Literal["decoder"] = "decoder"
    vocab_size: int
    d_model: int
    n_layers: int
    max_seq_len: int
    attention: AttentionConfig
    mlp: MLPConfig = field(default_factory=MLPConfig)
    positions: Literal["rope", "learned", "sinusoidal", "none"] = "rope"
    rope: RoPEConfig | None = None
    norm: Literal["rmsnorm", "layernorm"] = "rmsnorm"
    norm_eps: float = 1e-5
    norm_bias: bool = False  # LayerNorm only
    residual: Literal["pre", "post"] = "pre"
    final_norm: bool = True
    tie_embeddings: bool = False
    dropout: float = 0.0  # embedding and residual-branch dropout
    drop_path: float = 0.0  # stochastic depth, linearly increasing to this rate at the last layer
    init_std: float = 0.02
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"

    def __post_init__(self) -> None:
        for name in ("vocab_size", "d_model", "n_layers", "max_seq_len"):
            if getattr(self, name) < 1:
                raise FieldProblem(name, f"must be >= 1, got {getattr(self, name)}")
        if self.attention.head_dim is None and self.d_model % self.attention.n_heads:
            raise FieldProblem(
                "attention.head_dim",
                f"d_model ({self.d_model}) is not divisible by n_heads ({self.attention.n_heads}); set head_dim",
            )
        if self.positions == "rope":
            if self.rope is None:
                raise FieldProblem("rope", "positions is 'rope' but no rope section is given")
            if self.head_dim % 2:
                raise FieldProblem("attention.head_dim", f"RoPE needs an even head dim, got {self.head_dim}")
        elif self.rope is not None:
            raise FieldProblem("rope", f"is set but positions is {self.positions!r}")
        if self.norm == "rmsnorm" and self.norm_bias:
            raise FieldProblem("norm_bias", "RMSNorm has no bias")
        for name in ("dropout", "drop_path"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise FieldProblem(name, f"must be in [0, 1), got {getattr(self, name)}")
        if self.attention.window is not None and self.attention.window > self.max_seq_len:
            raise FieldProblem("attention.window", f"({self.attention.window}) exceeds max_seq_len ({self.max_seq_len})")
        if self.norm_eps <= 0:
            raise FieldProblem("norm_eps", f"must be > 0, got {self.norm_eps}")
        if self.init_std < 0:
            raise FieldProblem("init_std", f"must be >= 0, got {self.init_std}")

    @property
    def head_dim(self) -> int:
        return self.attention.head_dim or self.d_model // self.attention.n_heads

    @property
    def mlp_hidden(self) -> int:
        return self.mlp.hidden or 4 * self.d_model


# Where each flat v1 key lives in v2 (``mlp`` itself moved too: v1's ``mlp: swiglu`` is v2's ``mlp.kind``).
_V1_MOVED = {
    "n_heads": "attention.n_heads",
    "n_kv_heads": "attention.n_kv_heads",
    "attn_bias": "attention.bias",
    "attn_kernel": "attention.kernel",
    "mlp_hidden": "mlp.hidden",
    "mlp_bias": "mlp.bias",
    "rope_theta": "rope.theta",
}


@register_migration("model", from_version=1, moved=_V1_MOVED)
def _model_v1_to_v2(old: dict[str, Any]) -> dict[str, Any]:
    """v1 was flat (nanoGPT style); v2 nests attention, MLP and RoPE settings in sub-configs (``_V1_MOVED``).

    ``rope_theta`` is used only when positions is ``rope``; every other top-level field is the same in v2.
    """
    v2_only = sorted(key for key in ("attention", "rope") if key in old) + (["mlp"] if isinstance(old.get("mlp"), dict) else [])
    if v2_only:
        raise FieldProblem("version", f"the file says version 1 but has v2 sections ({', '.join(v2_only)}); set version: 2")
    new = dict(old)
    theta = new.pop("rope_theta", 10000.0)
    sections: dict[str, dict[str, Any]] = {"attention": {}, "mlp": {}}
    if "mlp" in new:
        sections["mlp"]["kind"] = new.pop("mlp")
    for v1_key, path in _V1_MOVED.items():
        section, _, field_name = path.partition(".")
        if v1_key in new and section in sections:
            sections[section][field_name] = new.pop(v1_key)
    new.update(sections)
    if new.get("positions", "rope") == "rope":
        new["rope"] = {"theta": theta}
    return new
