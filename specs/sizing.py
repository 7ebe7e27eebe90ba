"""How big a model is, from its :class:`ModelConfig` alone: parameters by part, and the memory of its weights,
gradients, AdamW states and KV cache.

No torch: ``lmplanes config show`` prints these without building anything. The count follows the modules the
``model`` plane builds, term by term, and a test holds it equal to the model built on the ``meta`` device for
every preset (``tests/model/test_preset_sizes.py``), so a new module without its term here fails there.

The count is a sum of named parts over three places, each a function that a new family extends:
:func:`embedding_parts` (what comes before the blocks), :func:`layer_parts` (one block: its token mixer, its
feed-forward and its norms) and :func:`output_parts` (final norm and head). The parts of one kind add up over
the layers, so ``attention`` is the attention of every layer together.
"""

from __future__ import annotations

from dataclasses import dataclass

from specs.model_config import AttentionConfig, MLPConfig, ModelConfig
from specs.moe_config import MoEConfig

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
_FP32 = 4
Parts = dict[str, int]


def parameter_count(cfg: ModelConfig) -> int:
    """Parameters of the model ``cfg`` describes, tied weights counted once (what ``model.count_parameters``
    finds by building it on the meta device)."""
    return sum(parameter_parts(cfg).values())


def parameter_parts(cfg: ModelConfig) -> Parts:
    """The parameter count by part, in model order, parts of size zero left out: ``embeddings``,
    ``positions``, ``token_types``, ``embedding_norm``, then per-layer parts summed over the layers
    (``attention`` or ``deltanet``, ``mlp`` or a MoE's ``router``/``experts``/``shared_experts``, ``block_norms``;
    an encoder-decoder's encoder blocks included, and its decoder blocks' ``cross_attention``), then
    ``final_norm`` and ``head``."""
    parts: Parts = {}
    _add(parts, embedding_parts(cfg))
    for layer in range(cfg.n_layers):
        _add(parts, layer_parts(cfg, layer))
    if cfg.architecture == "encoder_decoder":  # the encoder's blocks: the decoder's without cross-attention
        encoder = layer_parts(cfg, 0, cross_attention=False)
        _add(parts, {name: cfg.n_encoder_layers * count for name, count in encoder.items()})
    _add(parts, output_parts(cfg))
    return {name: count for name, count in parts.items() if count}


def embedding_parts(cfg: ModelConfig) -> Parts:
    """Token embeddings, learned positions (``max_seq_len + position_offset`` rows), and the encoder's token
    types and embedding norm (the decoder builds neither). An encoder-decoder shares the token embeddings and
    gives each side its own positions and embedding norm. RoPE, sinusoidal positions and the embedding scale
    have no parameters."""
    encoder = cfg.architecture == "encoder"
    sides = 2 if cfg.architecture == "encoder_decoder" else 1
    normed = cfg.embedding_norm and cfg.architecture != "decoder"
    return {
        "embeddings": cfg.vocab_size * cfg.d_model,
        "positions": sides * (cfg.max_seq_len + cfg.position_offset) * cfg.d_model if cfg.positions == "learned" else 0,
        "token_types": cfg.type_vocab_size * cfg.d_model if encoder else 0,
        "embedding_norm": sides * norm_parameters(cfg, cfg.d_model) if normed else 0,
    }


def layer_parts(cfg: ModelConfig, layer: int, *, cross_attention: bool | None = None) -> Parts:
    """Block ``layer`` (0-based): its token mixer, its feed-forward and its norms.

    A Gated DeltaNet layer of a hybrid stack counts its mixer as ``deltanet`` instead of ``attention``; a MoE
    layer counts its feed-forward as ``router``, ``experts`` and ``shared_experts`` (:func:`moe_parts`) instead
    of ``mlp``; an encoder-decoder's decoder blocks (``cross_attention``, default: whether the model is one) add
    a ``cross_attention`` part (the ``attention`` config again) and a norm for it. Each stays a named part, so
    ``config show`` lists it.
    """
    cross = cfg.architecture == "encoder_decoder" if cross_attention is None else cross_attention
    norms_per_block = 4 if cfg.residual == "sandwich" else 2  # sandwich: a norm on each branch's output too
    if cfg.deltanet is not None and not cfg.deltanet.is_attention_layer(layer):
        mixer = {"deltanet": cfg.deltanet.layer_parameters(cfg.d_model)}
    else:
        mixer = {"attention": attention_parameters(cfg.attention, cfg.d_model, head_dim=cfg.head_dim)}
    if cross:
        mixer["cross_attention"] = attention_parameters(cfg.attention, cfg.d_model, head_dim=cfg.head_dim)
    if cfg.moe is not None and cfg.moe.is_moe_layer(layer):
        feed_forward = moe_parts(cfg.moe, cfg.d_model)
    else:
        feed_forward = {"mlp": mlp_parameters(cfg.mlp, cfg.d_model, cfg.mlp_hidden)}
    norms = (norms_per_block + (1 if cross else 0)) * norm_parameters(cfg, cfg.d_model)
    return {**mixer, **feed_forward, "block_norms": norms}


def output_parts(cfg: ModelConfig) -> Parts:
    """The final norm and the head: a decoder's LM head (nothing when tied to the embeddings), an encoder's
    MLM head (dense + norm + decoder bias, plus the decoder weight when untied) or none. An encoder-decoder
    has a final norm on each side; its fixed logits bias is a buffer, not a parameter."""
    sides = 2 if cfg.architecture == "encoder_decoder" else 1
    final_norm = sides * norm_parameters(cfg, cfg.d_model) if cfg.final_norm else 0
    projection = 0 if cfg.tie_embeddings else cfg.vocab_size * cfg.d_model
    if cfg.head == "lm":
        head = projection
    elif cfg.head == "mlm":  # model.encoder.MLMHead: the dense carries a bias when the MLP does
        transform = linear_parameters(cfg.d_model, cfg.d_model, bias=cfg.mlp.bias) + norm_parameters(cfg, cfg.d_model)
        head = transform + projection + cfg.vocab_size  # the decoder's bias is its own, tied or not
    else:
        head = 0
    return {"final_norm": final_norm, "head": head}


def linear_parameters(d_in: int, d_out: int, *, bias: bool) -> int:
    return d_in * d_out + (d_out if bias else 0)


def norm_parameters(cfg: ModelConfig, dim: int) -> int:
    """One norm of the config's kind over ``dim``: RMSNorm has a scale; LayerNorm a scale and, with
    ``norm_bias``, a bias (the weight-offset form of RMSNorm has the same one scale)."""
    return dim * (2 if cfg.norm == "layernorm" and cfg.norm_bias else 1)


def attention_parameters(att: AttentionConfig, d_model: int, *, head_dim: int) -> int:
    """``wq``, ``wk``, ``wv`` (GQA: ``kv_heads`` heads for keys and values), ``wo``, their biases, and QK-norm
    (an RMSNorm scale over the head dim for queries and one for keys, whatever the block norm is).
    ``head_dim`` is ``ModelConfig.head_dim``, which resolves a ``None`` ``att.head_dim``."""
    q_width, kv_width = att.n_heads * head_dim, att.kv_heads * head_dim
    return (
        linear_parameters(d_model, q_width, bias=att.bias)
        + 2 * linear_parameters(d_model, kv_width, bias=att.bias)
        + linear_parameters(q_width, d_model, bias=att.output_bias)
        + (2 * head_dim if att.qk_norm else 0)
    )


def mlp_parameters(mlp: MLPConfig, d_model: int, hidden: int) -> int:
    """GELU: ``fc`` and ``proj``; SwiGLU/GeGLU: gate, up and down. An MoE expert is one of these."""
    n_in = 2 if mlp.kind in ("swiglu", "geglu") else 1
    return n_in * linear_parameters(d_model, hidden, bias=mlp.bias) + linear_parameters(hidden, d_model, bias=mlp.bias)


def moe_parts(moe: MoEConfig, d_model: int) -> Parts:
    """One MoE feed-forward (``blocks.MoE``): the bias-free router (``E * C``), ``E`` bias-free SwiGLU experts
    (``3 * E * C * expert_hidden``), and the shared experts as one SwiGLU of their summed width, plus ``C`` for
    the shared-expert gate."""
    swiglu = MLPConfig(kind="swiglu")
    shared = mlp_parameters(swiglu, d_model, moe.shared_hidden) if moe.n_shared_experts else 0
    return {
        "router": linear_parameters(d_model, moe.n_experts, bias=False),
        "experts": moe.n_experts * mlp_parameters(swiglu, d_model, moe.expert_hidden),
        "shared_experts": shared + (d_model if moe.shared_expert_gate else 0),
    }


def _add(total: Parts, parts: Parts) -> None:
    for name, count in parts.items():
        total[name] = total.get(name, 0) + count


# ------------------------------------------------------------------------------------------------------ memory


@dataclass(frozen=True, kw_only=True, slots=True)
class ModelSizes:
    """Parameters and memory of a model, from its config (:func:`model_sizes`). Bytes are exact integers.

    * ``weight_bytes``: every parameter in the config's ``dtype``;
    * ``gradient_bytes``: one gradient per parameter, in the same dtype;
    * ``optimizer_bytes``: AdamW's two moments in float32, plus a float32 master copy of the weights when they
      are 16-bit (the usual mixed-precision recipe; float32 weights are their own master copy);
    * ``kv_cache_bytes_per_token``: keys and values of every attention layer for one token of one row, in the
      dtype (``2 * n_layers * kv_heads * head_dim * bytes``; a DeltaNet hybrid's DeltaNet layers hold a
      fixed-size state instead); ``None`` for an encoder, which keeps no cache. An encoder-decoder's figure is
      its decoder's self-attention per target token; its cache holds the cross-attention memory as well, the
      same bytes per source token.
      Sliding-window layers are counted in full: ``attn.StaticKVCache`` and ``attn.PagedKVCache`` store every
      position for every layer. ``windowed_layers`` and ``window`` say how many layers would need only
      ``window`` tokens in a window-aware cache.

    Activations are left out: they depend on the batch, the sequence length and checkpointing.
    """

    parameters: int
    parts: tuple[tuple[str, int], ...]
    dtype: str
    weight_bytes: int
    gradient_bytes: int
    optimizer_bytes: int
    fp32_master_copy: bool  # whether optimizer_bytes includes a float32 copy of 16-bit weights
    kv_cache_bytes_per_token: int | None
    recurrent_state_bytes_per_row: int  # a DeltaNet hybrid's fixed state per row (0 without DeltaNet layers)
    active_parameters: int  # parameters one token runs through: a MoE's top_k of its routed experts
    max_seq_len: int
    n_layers: int
    windowed_layers: int
    window: int | None

    @property
    def training_bytes(self) -> int:
        """Weights, gradients and AdamW states together (activations not included)."""
        return self.weight_bytes + self.gradient_bytes + self.optimizer_bytes

    @property
    def kv_cache_bytes_per_row(self) -> int | None:
        """The KV cache of one row of ``max_seq_len`` tokens."""
        per_token = self.kv_cache_bytes_per_token
        return None if per_token is None else per_token * self.max_seq_len

    def to_dict(self) -> dict[str, object]:
        """Plain JSON/YAML data: every figure, the parts as a mapping, and the derived totals."""
        return {
            "parameters": self.parameters,
            "parts": dict(self.parts),
            "dtype": self.dtype,
            "weight_bytes": self.weight_bytes,
            "gradient_bytes": self.gradient_bytes,
            "optimizer_bytes": self.optimizer_bytes,
            "fp32_master_copy": self.fp32_master_copy,
            "training_bytes": self.training_bytes,
            "kv_cache_bytes_per_token": self.kv_cache_bytes_per_token,
            "kv_cache_bytes_per_row": self.kv_cache_bytes_per_row,
            "recurrent_state_bytes_per_row": self.recurrent_state_bytes_per_row,
            "active_parameters": self.active_parameters,
            "max_seq_len": self.max_seq_len,
            "n_layers": self.n_layers,
            "windowed_layers": self.windowed_layers,
            "window": self.window,
        }


def model_sizes(cfg: ModelConfig) -> ModelSizes:
    """The parameter count and memory figures of the model ``cfg`` describes (see :class:`ModelSizes`)."""
    parts = parameter_parts(cfg)
    count = sum(parts.values())
    width = DTYPE_BYTES[cfg.dtype]
    master_copy = width < _FP32
    kv = None
    if cfg.architecture != "encoder":  # DeltaNet layers keep a fixed-size state, not keys and values per token
        kv = 2 * len(_attention_layers(cfg)) * cfg.attention.kv_heads * cfg.head_dim * width
    windowed = sum(cfg.attention.layer_window(i) is not None for i in _attention_layers(cfg))
    return ModelSizes(
        parameters=count,
        parts=tuple(parts.items()),
        dtype=cfg.dtype,
        weight_bytes=count * width,
        gradient_bytes=count * width,
        optimizer_bytes=count * _FP32 * (3 if master_copy else 2),
        fp32_master_copy=master_copy,
        kv_cache_bytes_per_token=kv,
        recurrent_state_bytes_per_row=_recurrent_state_bytes(cfg, width),
        active_parameters=count - _inactive_expert_parameters(cfg),
        max_seq_len=cfg.max_seq_len,
        n_layers=cfg.n_layers,
        windowed_layers=windowed,
        window=cfg.attention.window,
    )


def _attention_layers(cfg: ModelConfig) -> list[int]:
    """The layers that attend with softmax attention (all of them unless the stack is a DeltaNet hybrid)."""
    return [i for i in range(cfg.n_layers) if cfg.deltanet is None or cfg.deltanet.is_attention_layer(i)]


def _recurrent_state_bytes(cfg: ModelConfig, width: int) -> int:
    """Per row, each DeltaNet layer's short-convolution state (``conv_kernel - 1`` steps of its q, k, v channels,
    in the dtype) and its recurrent state (``value_heads * head_k_dim * value_dim``, always float32)."""
    dn = cfg.deltanet
    if dn is None:
        return 0
    channels = 2 * dn.n_heads * dn.head_k_dim + dn.value_heads * dn.value_dim
    per_layer = channels * (dn.conv_kernel - 1) * width + dn.value_heads * dn.head_k_dim * dn.value_dim * _FP32
    return per_layer * (cfg.n_layers - len(_attention_layers(cfg)))


def _inactive_expert_parameters(cfg: ModelConfig) -> int:
    """Routed-expert parameters a token does not run through: ``1 - top_k / n_experts`` of each MoE layer's
    experts (under expert choice, ``top_k`` is the average a token gets)."""
    moe = cfg.moe
    if moe is None:
        return 0
    layers = sum(moe.is_moe_layer(i) for i in range(cfg.n_layers))
    experts = moe_parts(moe, cfg.d_model)["experts"]
    return layers * experts * (moe.n_experts - moe.top_k) // moe.n_experts

