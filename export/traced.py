"""What an exporter traces: a :class:`specs.CausalLM` as a pure function of tensors.

A graph file (ONNX, a torch.export program) cannot hold a cache object between calls, so the decode step is
written functionally, the way ONNX runtimes expect (Hugging Face Optimum's naming)::

    input_ids (B, T), past_key_values.{i}.key/.value (B, Hkv, P, D)
        -> logits (B, T, V), present.{i}.key/.value (B, Hkv, P + T, D)

The model is reached only through the ``CausalLM`` protocol: :class:`PastKV` implements ``specs.KVCache`` over
the explicit past tensors (``update`` concatenates, ``step`` places the new tokens after the ``P`` past ones),
so the model runs its ordinary cached forward and never learns it is being traced. A prefill is the same graph
with ``P = 0``. Every row holds the same ``P`` tokens (no per-row lengths: a batch of prompts of different
lengths is decoded as separate calls, or padded by the caller).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from specs.cache import CacheLayout, CacheStep
from specs.model_config import ModelConfig
from specs.protocols import CausalLM
from specs.tensor_spec import dtype_name


def past_names(n_layers: int) -> list[str]:
    """Graph input names of the past keys and values, layer by layer (key, then value)."""
    return [f"past_key_values.{i}.{kind}" for i in range(n_layers) for kind in ("key", "value")]


def present_names(n_layers: int) -> list[str]:
    """Graph output names of the keys and values after this call, layer by layer (key, then value)."""
    return [f"present.{i}.{kind}" for i in range(n_layers) for kind in ("key", "value")]


def check_exportable(lm: nn.Module) -> ModelConfig:
    """The model's config, after refusing what the functional decode step cannot express (one line, the reason)."""
    if not isinstance(lm, CausalLM):
        raise TypeError(f"{type(lm).__name__} is not a specs.CausalLM (forward(input_ids, cache=...), new_cache); "
                        "only decoder language models export")
    cfg = lm.config
    if cfg.architecture != "decoder":
        raise ValueError(f"only decoder models export with a KV cache; {cfg.name or 'this model'} is {cfg.architecture!r}")
    if cfg.deltanet is not None:
        raise ValueError(f"{cfg.name or 'this model'} has Gated DeltaNet layers, whose recurrent state is not a KV cache; "
                         "the functional decode step exports attention keys/values only")
    return cfg


class PastKV:
    """A :class:`specs.KVCache` for one traced forward: the past keys/values are given tensors, ``update``
    returns them with the new ones appended and records the result as the layer's present."""

    def __init__(self, cfg: ModelConfig, past: Sequence[torch.Tensor]) -> None:
        if len(past) != 2 * cfg.n_layers:
            raise ValueError(f"expected {2 * cfg.n_layers} past tensors (key and value per layer), got {len(past)}")
        self._past = list(past)
        self.present: list[torch.Tensor] = []
        first = past[0]
        self._layout = CacheLayout(
            n_layers=cfg.n_layers, batch=first.shape[0], n_kv_heads=cfg.attention.kv_heads, head_dim=cfg.head_dim,
            max_len=cfg.max_seq_len, dtype=dtype_name(first),
        )

    @property
    def layout(self) -> CacheLayout:
        return self._layout

    @property
    def max_len(self) -> int:
        return self._layout.max_len

    @property
    def seq_lens(self) -> torch.Tensor:
        first = self._past[0]
        return torch.full((first.shape[0],), first.shape[2], dtype=torch.int64, device=first.device)

    def step(self, n_new: int) -> CacheStep:
        # A (B,) tensor rather than an int: the past length is a symbolic size while tracing, and the tensor form
        # keeps it symbolic (positions and the causal offset are computed in the graph, not baked in).
        return CacheStep(q_offset=self.seq_lens)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        keys = torch.cat([self._past[2 * layer], k], dim=2)
        values = torch.cat([self._past[2 * layer + 1], v], dim=2)
        self.present += [keys, values]
        return keys, values

    def advance(self, n_new: int) -> None:
        """Nothing to commit: the presents are the graph's outputs."""

    def evict(self, n: int | torch.Tensor) -> None:
        raise TypeError("PastKV serves one traced forward; roll back by slicing the present tensors instead")

    def reset(self, rows: Sequence[int] | None = None) -> None:
        raise TypeError("PastKV serves one traced forward; start again from empty past tensors instead")

    def reorder(self, indices: torch.Tensor) -> None:
        raise TypeError("PastKV serves one traced forward; reorder the present tensors' rows instead")

    def bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self._past)


class DecodeStep(nn.Module):
    """``(input_ids, *past) -> (logits, *present)``: the model's cached forward as a function of tensors."""

    def __init__(self, lm: nn.Module) -> None:
        super().__init__()
        self.cfg = check_exportable(lm)
        self.lm = lm

    def forward(self, input_ids: torch.Tensor, *past: torch.Tensor) -> tuple[torch.Tensor, ...]:
        cache = PastKV(self.cfg, past)
        logits = self.lm(input_ids, cache=cache)
        return (logits, *cache.present)


class Logits(nn.Module):
    """``input_ids -> logits``: the model's plain forward (no cache), for programs that score whole sequences."""

    def __init__(self, lm: nn.Module) -> None:
        super().__init__()
        check_exportable(lm)
        self.lm = lm

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.lm(input_ids)


def empty_past(cfg: ModelConfig, batch: int, length: int = 0, *, dtype: torch.dtype = torch.float32,
               device: torch.device | str = "cpu") -> list[torch.Tensor]:
    """Past tensors of ``length`` tokens per row (zeros): ``length = 0`` is a prefill."""
    shape = (batch, cfg.attention.kv_heads, length, cfg.head_dim)
    return [torch.zeros(shape, dtype=dtype, device=device) for _ in range(2 * cfg.n_layers)]
