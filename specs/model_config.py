"""ModelConfig and its nested parts (attention, RoPE, MLP).

Sub-configs exist only when used: ``rope`` is ``None`` unless ``positions == "rope"``. Every choice is a
string literal, never a class, so the config stays plain data that loads without torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from specs.config_io import FieldProblem, config_kind, register_migration
from specs.deltanet_config import DeltaNetConfig
from specs.kernel_names import kernel_name_problem
from specs.moe_config import MoEConfig

RopeScaling = Literal["none", "linear", "ntk", "dynamic", "llama3", "yarn"]


@dataclass(frozen=True, kw_only=True, slots=True)
class RoPEConfig:
    """Rotary position embedding, in the rotate-half layout Hugging Face Llama uses.

    ``scaling`` stretches the usable context by ``factor``: ``linear`` divides positions by it (position
    interpolation); ``ntk`` raises the base to ``theta * factor ** (d / (d - 2))`` (NTK-aware); ``dynamic`` does
    the NTK stretch only past ``original_max_seq_len``, by how far the sequence goes (each row's length: its
    largest position + 1); ``llama3`` interpolates
    the low frequencies (wavelengths past ``original_max_seq_len / low_freq_factor``), keeps the high ones
    (below ``original_max_seq_len / high_freq_factor``) and blends in between, as Llama 3.1 does; ``yarn``
    blends interpolation and extrapolation per frequency between ``beta_slow`` and ``beta_fast`` rotations and
    multiplies cos and sin by ``attention_factor`` (default ``0.1 ln(factor) + 1``), so the attention logits
    by its square, as Hugging Face does. ``local_theta``: the base of sliding-window layers when it differs
    from the global layers' (Gemma 3); those layers then rotate unscaled, ``scaling`` applies to the others.
    """

    theta: float = 10000.0
    scaling: RopeScaling = "none"
    factor: float = 1.0
    original_max_seq_len: int | None = None  # llama3, yarn, dynamic: the context the model was trained at
    low_freq_factor: float = 1.0  # llama3
    high_freq_factor: float = 4.0  # llama3
    beta_fast: float = 32.0  # yarn
    beta_slow: float = 1.0  # yarn
    attention_factor: float | None = None  # yarn
    local_theta: float | None = None

    def __post_init__(self) -> None:
        for name in ("theta", "low_freq_factor", "high_freq_factor", "beta_fast", "beta_slow"):
            if getattr(self, name) <= 0:
                raise FieldProblem(name, f"must be > 0, got {getattr(self, name)}")
        if self.factor < 1.0:
            raise FieldProblem("factor", f"must be >= 1, got {self.factor}")
        if self.scaling == "none" and self.factor != 1.0:
            raise FieldProblem("factor", f"is {self.factor} but scaling is 'none'; choose a scaling to stretch with")
        if self.scaling in ("dynamic", "llama3", "yarn") and self.original_max_seq_len is None:
            raise FieldProblem("original_max_seq_len", f"{self.scaling!r} scaling needs the context the model was trained at")
        if self.original_max_seq_len is not None and self.original_max_seq_len < 1:
            raise FieldProblem("original_max_seq_len", f"must be >= 1, got {self.original_max_seq_len}")
        if self.high_freq_factor <= self.low_freq_factor and self.scaling == "llama3":
            raise FieldProblem("high_freq_factor", f"({self.high_freq_factor}) must exceed low_freq_factor ({self.low_freq_factor})")
        if self.attention_factor is not None and self.attention_factor <= 0:
            raise FieldProblem("attention_factor", f"must be > 0, got {self.attention_factor}")
        if self.attention_factor is not None and self.scaling != "yarn":
            raise FieldProblem("attention_factor", f"is a YaRN setting; scaling is {self.scaling!r}")
        if self.scaling == "yarn" and self.theta <= 1:
            raise FieldProblem("theta", f"YaRN needs theta > 1 (its correction range divides by ln theta), got {self.theta}")
        if self.local_theta is not None and self.local_theta <= 0:
            raise FieldProblem("local_theta", f"must be > 0, got {self.local_theta}")


@dataclass(frozen=True, kw_only=True, slots=True)
class AttentionConfig:
    """Self-attention: MHA when ``n_kv_heads == n_heads``, GQA when it divides it, MQA when it is 1."""

    n_heads: int
    n_kv_heads: int | None = None  # None: same as n_heads (MHA)
    head_dim: int | None = None  # None: d_model // n_heads
    bias: bool = False  # on the q, k, v projections (and the output projection unless out_bias says otherwise)
    out_bias: bool | None = None  # None: same as bias (Qwen 2 has q/k/v biases but none on the output)
    qk_norm: bool = False  # RMSNorm over the head dim of q and k, before RoPE
    softcap: float | None = None  # attention logits -> softcap * tanh(logits / softcap)
    scale: float | None = None  # logits = q.k * scale; None: 1 / sqrt(head_dim) (Gemma: query_pre_attn_scalar ** -0.5)
    window: int | None = None  # sliding window: a query sees the last `window` keys, itself included
    global_every: int | None = None  # with a window: layer i attends globally iff (i + 1) % global_every == 0
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
        if self.global_every is not None:
            if self.window is None:
                raise FieldProblem("global_every", "is set but there is no window for the other layers")
            if self.global_every < 1:
                raise FieldProblem("global_every", f"must be >= 1, got {self.global_every}")
        if self.scale is not None and self.scale <= 0:
            raise FieldProblem("scale", f"must be > 0, got {self.scale}")
        if not 0.0 <= self.dropout < 1.0:
            raise FieldProblem("dropout", f"must be in [0, 1), got {self.dropout}")
        if (problem := kernel_name_problem(self.kernel)) is not None:
            raise FieldProblem("kernel", problem)

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def output_bias(self) -> bool:
        return self.bias if self.out_bias is None else self.out_bias

    def layer_window(self, layer: int) -> int | None:
        """The window of layer ``layer`` (0-based), or None when it attends globally."""
        if self.window is None or (self.global_every is not None and (layer + 1) % self.global_every == 0):
            return None
        return self.window

    def kernel_features(self) -> frozenset[str]:
        """The kernel features (:data:`specs.attention.FEATURES`) every call of a layer with this config needs,
        whatever its input: a named kernel lacking one of them is refused when the layer is built."""
        needed = {"softcap": self.softcap is not None, "window": self.window is not None, "dropout": self.dropout > 0}
        return frozenset(name for name, need in needed.items() if need)


@dataclass(frozen=True, kw_only=True, slots=True)
class MLPConfig:
    """Feed-forward: ``gelu`` is fc -> GELU -> proj; ``swiglu`` is down(silu(gate(x)) * up(x)); ``geglu`` is
    down(gelu(gate(x)) * up(x)) (Gemma, with the tanh approximation)."""

    kind: Literal["gelu", "swiglu", "geglu"] = "gelu"
    hidden: int | None = None  # None: 4 * d_model
    bias: bool = False
    gelu_approximate: Literal["none", "tanh"] = "none"
    dropout: float = 0.0  # on the hidden activations, before the down projection (BART's activation_dropout)

    def __post_init__(self) -> None:
        if self.hidden is not None and self.hidden < 1:
            raise FieldProblem("hidden", f"must be >= 1, got {self.hidden}")
        if not 0.0 <= self.dropout < 1.0:
            raise FieldProblem("dropout", f"must be in [0, 1), got {self.dropout}")


@config_kind("model", version=4)
@dataclass(frozen=True, kw_only=True, slots=True)
class ModelConfig:
    """A transformer language model. ``architecture`` picks the assembler in the ``model`` plane: ``decoder``
    (causal LM, ``head: lm``), ``encoder`` (bidirectional, BERT style: ``head: none`` for hidden states, or
    ``mlm`` for the masked-LM head) or ``encoder_decoder`` (seq2seq, T5/BART style, ``head: lm``: an encoder of
    ``encoder_layers`` blocks and a decoder of ``n_layers`` blocks with cross-attention, sharing the token
    embeddings and every other section of this config)."""

    KIND: ClassVar[str]  # set by config_kind
    VERSION: ClassVar[int]

    name: str = ""
    architecture: Literal["decoder", "encoder", "encoder_decoder"] = "decoder"
    head: Literal["lm", "mlm", "none"] = "lm"
    vocab_size: int
    d_model: int
    n_layers: int
    max_seq_len: int
    encoder_layers: int | None = None  # encoder_decoder only: the encoder's blocks; None: n_layers
    attention: AttentionConfig
    mlp: MLPConfig = field(default_factory=MLPConfig)
    moe: MoEConfig | None = None  # Mixture-of-Experts feed-forward on the layers it selects; None: dense
    positions: Literal["rope", "learned", "sinusoidal", "none"] = "rope"
    rope: RoPEConfig | None = None
    norm: Literal["rmsnorm", "layernorm"] = "rmsnorm"
    norm_eps: float = 1e-5
    norm_bias: bool = False  # LayerNorm only
    norm_weight_offset: float = 0.0  # RMSNorm scales by (offset + weight): Gemma stores weights around 0, offset 1
    residual: Literal["pre", "post", "sandwich"] = "pre"  # sandwich: pre-norm plus a norm on each branch's output
    final_norm: bool = True
    tie_embeddings: bool = False
    type_vocab_size: int = 0  # token-type (segment) embeddings added to the input (BERT); 0: none
    embedding_norm: bool = False  # a norm on the summed embeddings (BERT)
    embedding_scale: float | None = None  # token embeddings times this (Gemma: sqrt(d_model))
    final_softcap: float | None = None  # logits -> final_softcap * tanh(logits / final_softcap) (Gemma 2)
    position_offset: int = 0  # learned positions: position p reads row p + offset of a longer table (BART: 2)
    logits_bias: bool = False  # encoder_decoder: a fixed bias added to the logits (BART's final_logits_bias)
    dropout: float = 0.0  # embedding and residual-branch dropout
    drop_path: float = 0.0  # stochastic depth, linearly increasing to this rate at the last layer
    init_std: float = 0.02
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    deltanet: DeltaNetConfig | None = None  # set: a hybrid of Gated DeltaNet and softmax-attention layers

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
            if self.rope.scaling in ("ntk", "dynamic") and self.head_dim == 2:  # exponent head_dim / (head_dim - 2)
                raise FieldProblem("attention.head_dim", f"{self.rope.scaling!r} RoPE scaling needs a head dim > 2")
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
        if (self.architecture != "encoder") != (self.head == "lm"):
            want = "none' or 'mlm" if self.architecture == "encoder" else "lm"
            article = "a" if self.architecture == "decoder" else "an"
            raise FieldProblem("head", f"{article} {self.architecture} takes head '{want}', got {self.head!r}")
        self._check_encoder_decoder()
        if self.type_vocab_size < 0:
            raise FieldProblem("type_vocab_size", f"must be >= 0, got {self.type_vocab_size}")
        for name in ("embedding_scale", "final_softcap"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise FieldProblem(name, f"must be > 0, got {value}")
        if self.norm_weight_offset and self.norm != "rmsnorm":
            raise FieldProblem("norm_weight_offset", "applies to RMSNorm only")
        if self.rope is not None and self.rope.local_theta is not None and self.attention.window is None:
            raise FieldProblem("rope.local_theta", "is set but no layer has a sliding window")
        if self.moe is not None:
            if self.architecture != "decoder":  # only DecoderLM returns the auxiliary losses
                raise FieldProblem("moe", f"is supported by decoders; architecture is {self.architecture!r}")
            if not any(self.moe.is_moe_layer(i) for i in range(self.n_layers)):
                raise FieldProblem("moe", f"selects none of the {self.n_layers} layers (first_dense_layers, every)")
        if self.deltanet is not None:
            if self.architecture != "decoder":
                raise FieldProblem("deltanet", f"Gated DeltaNet layers are causal; architecture is {self.architecture!r}")
            if self.n_layers <= self.deltanet.hybrid_ratio:
                raise FieldProblem(
                    "deltanet.hybrid_ratio",
                    f"({self.deltanet.hybrid_ratio}) leaves no softmax-attention layer in {self.n_layers} layers; "
                    f"use n_layers > hybrid_ratio",
                )

    def _check_encoder_decoder(self) -> None:
        """The options only the encoder-decoder assembler reads, and what it does not support (yet)."""
        if self.position_offset < 0:
            raise FieldProblem("position_offset", f"must be >= 0, got {self.position_offset}")
        if self.position_offset and self.positions != "learned":
            raise FieldProblem("position_offset", f"applies to learned positions; positions is {self.positions!r}")
        if self.architecture != "encoder_decoder":
            for name, used in (("encoder_layers", self.encoder_layers is not None), ("logits_bias", self.logits_bias)):
                if used:
                    raise FieldProblem(name, f"is an encoder_decoder setting; architecture is {self.architecture!r}")
            return
        if self.encoder_layers is not None and self.encoder_layers < 1:
            raise FieldProblem("encoder_layers", f"must be >= 1, got {self.encoder_layers}")
        unsupported: list[tuple[str, object, bool, str]] = [
            ("residual", self.residual, self.residual == "sandwich", "an encoder_decoder is 'pre' or 'post' norm"),
            ("attention.window", self.attention.window, self.attention.window is not None, "an encoder_decoder attends globally"),
            ("type_vocab_size", self.type_vocab_size, self.type_vocab_size > 0, "an encoder_decoder has no token types"),
        ]
        for name, setting, failed, why in unsupported:
            if failed:
                raise FieldProblem(name, f"is {setting!r}; {why}")

    @property
    def n_encoder_layers(self) -> int:
        """Blocks in the encoder of an encoder_decoder (``encoder_layers``, default ``n_layers``)."""
        return self.encoder_layers or self.n_layers

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


@register_migration("model", from_version=2)
def _model_v2_to_v3(old: dict[str, Any]) -> dict[str, Any]:
    """v3 adds options (encoders, Gemma/Qwen options, more RoPE scalings) whose defaults are v2's behaviour."""
    return dict(old)


_V4_DEFAULTS: dict[str, Any] = {"moe": None, "deltanet": None, "encoder_layers": None, "position_offset": 0,
                                "logits_bias": False}


@register_migration("model", from_version=3)
def _model_v3_to_v4(old: dict[str, Any]) -> dict[str, Any]:
    """v4 adds Mixture-of-Experts (``moe``), Gated DeltaNet hybrids (``deltanet``), encoder-decoders
    (``encoder_layers``, ``position_offset``, ``logits_bias``) and ``mlp.dropout``, all off by default: a v3 file
    means what it meant. A v3 file that switches one on was written for v4 and says so wrongly."""
    v4_only = [key for key, default in _V4_DEFAULTS.items() if old.get(key, default) != default]
    if isinstance(old.get("mlp"), dict) and old["mlp"].get("dropout", 0.0) != 0.0:
        v4_only.append("mlp.dropout")
    if old.get("architecture") == "encoder_decoder":
        v4_only.append("architecture: encoder_decoder")
    if v4_only:
        raise FieldProblem("version", f"the file says version 3 but uses v4 fields ({', '.join(v4_only)}); set version: 4")
    return dict(old)
