"""Small GGUF files written with the ``gguf`` package's writer, for tests that need a file with known contents.

The Q/K rows are reordered the way llama.cpp's converter does it, spelled here independently of
``model.gguf_llama`` (an explicit row index), so a test of the import does not check the code against itself.
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import torch

BYTE_ALPHABET_SIZE = 256


def interleaved_rows(n_heads: int, head_dim: int) -> list[int]:
    """Row ``h*D + 2i + j`` of a converted q/k projection is row ``h*D + j*D/2 + i`` of the Hugging Face one."""
    half = head_dim // 2
    return [h * head_dim + j * half + i for h in range(n_heads) for i in range(half) for j in (0, 1)]


def llama_tensors(hf: torch.nn.Module) -> dict[str, np.ndarray]:
    """llama.cpp's names and row order for the weights of a ``transformers.LlamaForCausalLM``."""
    cfg = hf.config
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    heads = {"q": cfg.num_attention_heads, "k": cfg.num_key_value_heads}
    names = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
    names |= {f"self_attn.{p}_proj": f"attn_{g}" for p, g in (("q", "q"), ("k", "k"), ("v", "v"), ("o", "output"))}
    names |= {f"mlp.{p}_proj": f"ffn_{p}" for p in ("gate", "up", "down")}
    out: dict[str, np.ndarray] = {}
    for name, tensor in hf.state_dict().items():
        array = tensor.detach().float().numpy()
        if name == "model.embed_tokens.weight":
            out["token_embd.weight"] = array
        elif name == "model.norm.weight":
            out["output_norm.weight"] = array
        elif name == "lm_head.weight":
            if not cfg.tie_word_embeddings:
                out["output.weight"] = array
        else:
            _, _, layer, *rest = name.split(".")
            module, kind = ".".join(rest[:-1]), rest[-1]
            short = names[module]
            if short in ("attn_q", "attn_k"):
                array = array[interleaved_rows(heads[short[-1]], head_dim)]
            out[f"blk.{layer}.{short}.{kind}"] = array
    return out


def write_gguf(
    path: Path,
    *,
    arch: str = "llama",
    metadata: dict[str, object] | None = None,
    tensors: dict[str, np.ndarray] | None = None,
    qtypes: dict[str, gguf.GGMLQuantizationType] | None = None,
    tokenizer: dict[str, object] | None = None,
    raw: dict[str, tuple[np.ndarray, gguf.GGMLQuantizationType]] | None = None,
) -> Path:
    """A GGUF file: ``metadata`` without the ``{arch}.`` prefix, tensors in numpy order (quantized to
    ``qtypes[name]`` when given), ``tokenizer`` keys without the ``tokenizer.ggml.`` prefix (``chat_template``
    goes to ``tokenizer.chat_template``); ``raw`` tensors are already in their type's bytes."""
    writer = gguf.GGUFWriter(str(path), arch)
    for key, value in (metadata or {}).items():
        _add(writer, key if key.startswith("general.") else f"{arch}.{key}", value)
    for key, value in (tokenizer or {}).items():
        _add(writer, "tokenizer.chat_template" if key == "chat_template" else f"tokenizer.ggml.{key}", value)
    for name, array in (tensors or {}).items():
        qtype = (qtypes or {}).get(name, gguf.GGMLQuantizationType.F32)
        if qtype == gguf.GGMLQuantizationType.F32:
            writer.add_tensor(name, np.ascontiguousarray(array, dtype=np.float32))
        elif qtype == gguf.GGMLQuantizationType.F16:
            writer.add_tensor(name, np.ascontiguousarray(array, dtype=np.float16))
        else:
            writer.add_tensor(name, gguf.quants.quantize(array.astype(np.float32), qtype), raw_dtype=qtype)
    for name, (data, qtype) in (raw or {}).items():
        writer.add_tensor(name, data, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def llama_metadata(hf_config, *, name: str = "tiny-llama") -> dict[str, object]:
    """The ``llama.*`` keys llama.cpp's converter writes for a Hugging Face Llama config."""
    head_dim = getattr(hf_config, "head_dim", None) or hf_config.hidden_size // hf_config.num_attention_heads
    rope = getattr(hf_config, "rope_parameters", None) or {}
    return {
        "general.name": name,
        "context_length": hf_config.max_position_embeddings,
        "embedding_length": hf_config.hidden_size,
        "block_count": hf_config.num_hidden_layers,
        "feed_forward_length": hf_config.intermediate_size,
        "attention.head_count": hf_config.num_attention_heads,
        "attention.head_count_kv": hf_config.num_key_value_heads,
        "rope.freq_base": float(rope.get("rope_theta", 10000.0)),
        "attention.layer_norm_rms_epsilon": float(hf_config.rms_norm_eps),
        "rope.dimension_count": head_dim,
        "vocab_size": hf_config.vocab_size,
    }


def byte_level_vocab(extra: tuple[str, ...] = ("<|endoftext|>",)) -> dict[str, object]:
    """A ``gpt2`` tokenizer of the 256 byte symbols and no merges, then the ``extra`` control tokens."""
    from data.tokenizer_builders import byte_symbols

    tokens = [*byte_symbols(), *extra]
    return {
        "model": "gpt2",
        "pre": "gpt-2",
        "tokens": tokens,
        "token_type": [1] * BYTE_ALPHABET_SIZE + [3] * len(extra),
    }


def _add(writer: gguf.GGUFWriter, key: str, value: object) -> None:
    if isinstance(value, bool):
        writer.add_bool(key, value)
    elif isinstance(value, str):
        writer.add_string(key, value)
    elif isinstance(value, float):
        writer.add_float32(key, value)
    elif isinstance(value, int):
        writer.add_uint32(key, value)
    elif isinstance(value, (list, tuple)):
        if value and all(isinstance(v, int) for v in value):
            writer.add_array(key, [int(v) for v in value])  # token types: int32 in llama.cpp's files
        else:
            writer.add_array(key, list(value))
    else:
        raise TypeError(f"cannot write {key}={value!r}")
