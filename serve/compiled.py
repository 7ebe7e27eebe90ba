"""A compiled decode step, applied from outside: ``compile_decoding(model)`` is a :class:`specs.CausalLM` that
runs every one-token step with a cache through ``torch.compile`` and everything else (prefill, full forwards)
eagerly, so ``generate``, ``stream``, beam search and speculative decoding use it unchanged.

The step compiles once per cache size: the caches it makes are ``fixed_shapes`` (gpt-fast style: every step
reads whole buffers with per-row valid lengths, no host syncs), and their length is rounded up to a power of
two (at least 64, at most the model's context), so prompts of any length share a handful of graphs. Attention
over the unused tail of the buffer is masked, and cheap next to reading the weights once per token.

``freeze=True`` compiles with Inductor's freezing: the weights become constants of the graph, so Inductor can
prepack them for the CPU's matrix kernels (oneDNN's blocked bfloat16 layout, MKL's packed float32), merge the
linears that share an input, and fold what depends only on the weights. On the CPU it is worth 1.05-1.7x in
decode tokens/s (most in bfloat16; BENCHMARKS.md), at the price of a longer first compile (about 4x) and a packed
copy of the weights. The graph keeps the weights it saw: a step taken after the model's weights change would
silently use the old ones, so :class:`CompiledDecoding` refuses it (it compares the parameters' identities and
in-place version counters, at slots recorded once, before every step: 0.06 ms for llama-55m, 0.25 ms for
SmolLM2, against steps of 5-9 ms). The frozen graph also keeps the modules' settings it was compiled with
(dynamo's guards on module attributes are dropped: they cost more than the check above); compile afresh after
changing one.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any, Literal, overload

import torch

from specs.cache import KVCache, PagedSpec
from specs.protocols import CausalLM, LMOutput

_SMALLEST_CACHE = 64
# Inductor settings of freeze=True. concat_linear merges the linears that read the same input (q/k/v, gate/up)
# into one product over their frozen, concatenated weights: fewer, longer weight streams (bfloat16 llama-55m:
# 170 -> 205 tokens/s; float32 +3%).
# cpp_wrapper: the graph's kernels are called from generated C++ rather than Python, which matters when a token
# is hundreds of small kernels (SmolLM2 int4 112 -> 127 and 115 -> 125 tokens/s, llama-55m float32 180 -> 192 and
# 175 -> 181, alternated scratch runs), at the price of compiling that wrapper too (a first compile 16 -> 51 s).
_FREEZING = {"freezing": True, "cpp.enable_concat_linear": True, "cpp_wrapper": True}


class CompiledDecoding:
    """``model`` with its one-token decode steps compiled. Attributes other than the ones below are the
    model's (``config``, ``output_head``, ...)."""

    def __init__(
        self, model: CausalLM, *, mode: str | None = None, backend: str | Callable = "inductor", freeze: bool = False
    ) -> None:
        if freeze and backend != "inductor":
            raise ValueError(f"freeze=True is an Inductor option; backend {backend!r} cannot freeze weights")
        self.model = model
        self.config = model.config
        self._slots = _weight_slots(model) if freeze else []
        self._frozen = _weight_versions(self._slots) if freeze else None
        step: Callable[..., torch.Tensor] = self._decode
        options = None
        if freeze:
            # The frozen graph holds the weights and the modules' settings as they were, and __call__ checks the
            # weights itself, so dynamo's guards on every module attribute and parameter (~0.6 ms of a 9 ms
            # SmolLM2 int4 step, measured) are dropped. torch.compile takes a mode or options, not both.
            options = {**(torch._inductor.list_mode_options(mode) if mode else {}),
                       "guard_filter_fn": torch.compiler.skip_guard_on_all_nn_modules_unsafe}
            mode = None
            step = types.MethodType(_own_code(CompiledDecoding._decode), self)
        # dynamic=False: a step has the same shapes every time (the cache's are fixed), so no symbolic shapes.
        self._step = torch.compile(step, fullgraph=True, dynamic=False, mode=mode, backend=backend, options=options)

    def _decode(
        self, token: torch.Tensor, cache: KVCache, positions: torch.Tensor | None, attn_mask: torch.Tensor | None
    ) -> torch.Tensor:
        return self.model(token, cache=cache, positions=positions, attn_mask=attn_mask)

    @overload
    def __call__(
        self,
        input_ids: torch.Tensor,
        *,
        positions: torch.Tensor | None = None,
        cache: KVCache | None = None,
        attn_mask: torch.Tensor | None = None,
        output: Literal["logits"] = "logits",
    ) -> torch.Tensor: ...

    @overload
    def __call__(
        self,
        input_ids: torch.Tensor,
        *,
        positions: torch.Tensor | None = None,
        cache: KVCache | None = None,
        attn_mask: torch.Tensor | None = None,
        output: Literal["hidden", "all"],
    ) -> LMOutput: ...

    def __call__(
        self,
        input_ids: torch.Tensor,
        *,
        positions: torch.Tensor | None = None,
        cache: KVCache | None = None,
        attn_mask: torch.Tensor | None = None,
        output: Literal["logits", "hidden", "all"] = "logits",
    ) -> torch.Tensor | LMOutput:
        if cache is not None and getattr(cache, "fixed_shapes", False):
            if attn_mask is not None:
                attn_mask = _widen(attn_mask, cache.max_len)
            if input_ids.shape[1] == 1 and output == "logits":
                if self._frozen is None:
                    return self._step(input_ids, cache, positions, attn_mask)
                if _weight_versions(self._slots) != self._frozen:
                    raise RuntimeError("the model's weights changed after compile_decoding(freeze=True) baked them "
                                       "into the decode graph; compile the changed model afresh, or use freeze=False")
                # Patched around the call, where Inductor compiles, and not passed as torch.compile(options=...):
                # on torch 2.13 that option left the graph unfrozen (same tokens/s, same rounding as without).
                with torch._inductor.config.patch(_FREEZING):
                    return self._step(input_ids, cache, positions, attn_mask)
        return self.model(input_ids, cache=cache, positions=positions, attn_mask=attn_mask, output=output)

    def new_cache(
        self,
        batch: int,
        max_len: int,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        fixed_shapes: bool = True,
        paged: PagedSpec | None = None,
    ) -> KVCache:
        """A fixed-shape cache of at least ``max_len`` tokens (rounded up to a power of two, see the module); with
        ``paged``, the model's paged cache as it is (its steps run eagerly)."""
        if paged is not None:
            return self.model.new_cache(batch, max_len, dtype=dtype, device=device, paged=paged)
        bucket = max(_SMALLEST_CACHE, 1 << (max_len - 1).bit_length())
        size = max(max_len, min(bucket, self.config.max_seq_len))
        return self.model.new_cache(batch, size, dtype=dtype, device=device, fixed_shapes=fixed_shapes)

    def output_head(self) -> torch.nn.Module:
        return self.model.output_head()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)


def _own_code(function: Callable) -> Callable:
    """A copy of ``function`` with a code object of its own. Dynamo keeps compiled graphs on the code object they
    were traced from and picks one by its guards; without the guards on modules, those no longer tell two models
    apart (measured: a second model's frozen step ran the first one's weights), so each frozen step gets code --
    and graphs -- of its own."""
    code = function.__code__.replace()  # equal, not identical
    return types.FunctionType(code, function.__globals__, function.__name__, function.__defaults__, function.__closure__)


def _weight_slots(model: CausalLM) -> list[tuple[dict[str, Any], str]]:
    """Every place the model holds a submodule, parameter or buffer: (its owner's dict, its name). Found once;
    walking the modules again each step cost more than the check (SmolLM2: 0.87 ms a step against 0.25)."""
    modules = model.modules()  # type: ignore[attr-defined]
    return [(slots, name) for m in modules for slots in (m._modules, m._parameters, m._buffers) for name in slots]


def _weight_versions(slots: list[tuple[dict[str, Any], str]]) -> list[tuple[int, int]]:
    """What each slot holds, by identity, and a tensor's in-place version: a weight written in place, a parameter
    or submodule replaced, or one deleted changes this list."""
    held = (owner.get(name) for owner, name in slots)
    return [(id(value), value._version if isinstance(value, torch.Tensor) else 0) for value in held]


def _widen(attn_mask: torch.Tensor, width: int) -> torch.Tensor:
    """A decode loop's allow mask covers the keys written so far; a fixed-shape cache returns all ``width``
    slots, and the ones not written yet are never allowed."""
    missing = width - attn_mask.shape[-1]
    if missing <= 0:
        return attn_mask
    return torch.cat([attn_mask, attn_mask.new_zeros(*attn_mask.shape[:-1], missing)], dim=-1)


def compile_decoding(
    model: CausalLM, *, mode: str | None = None, backend: str | Callable = "inductor", freeze: bool = False
) -> CompiledDecoding:
    """``model`` with its decode steps compiled (``mode`` and ``backend`` as ``torch.compile`` takes them, e.g.
    ``mode="max-autotune-no-cudagraphs"``; ``freeze``: weights as graph constants, see the module). The first step
    at each cache size pays for compilation."""
    return CompiledDecoding(model, mode=mode, backend=backend, freeze=freeze)
