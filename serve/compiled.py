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
copy of the weights. The graph keeps the weights it saw: decoding after the model's weights change would
silently use the old ones, so :class:`CompiledDecoding` refuses it. It compares what every module holds (by
identity) and the tensors' in-place version counters with what they were at compile time whenever a decode
loop begins (its prefill: any call with one of its caches that is not a one-token step), not at each step:
weights change between generations (a fine-tuning step, ``load_state_dict``), and the check at every step cost
0.19 ms of a 5.4 ms llama-55m step (measured: after a token's weights have streamed through the caches, each
object it reads is a cache miss). The frozen graph also keeps the modules' settings, and the
library's module-level constants, it was compiled with (dynamo's guards on module attributes and globals are
dropped: they cost more than the check); compile afresh after changing one.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any, Literal, overload

import torch

from specs.cache import KVCache, PagedSpec
from specs.protocols import CausalLM, LMOutput

_SMALLEST_CACHE = 64
# How dynamo's refusal under set_stance("fail_on_recompile") begins: the only error a frozen step retries.
_RECOMPILE_REFUSED = "Detected recompile when torch.compile stance is 'fail_on_recompile'"
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
        self._weights = _FrozenWeights(model) if freeze else None
        step: Callable[..., torch.Tensor] = self._decode
        options = None
        if freeze:
            # The frozen graph holds the weights and the modules' settings as they were, and __call__ checks the
            # weights itself, so dynamo's guards on every module attribute and parameter (~0.6 ms of a 9 ms
            # SmolLM2 int4 step, measured) are dropped, and so are those on the library's module globals (the
            # functions and constants the forward reads: 106 -> 26 us of guards a llama-55m step, measured).
            # torch.compile takes a mode or options, not both.
            options = {**(torch._inductor.list_mode_options(mode) if mode else {}), "guard_filter_fn": _tensor_guards}
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
                if self._weights is None:
                    return self._step(input_ids, cache, positions, attn_mask)
                return self._frozen_step(input_ids, cache, positions, attn_mask)
            self._refuse_changed_weights()  # a prefill: the steps after it would run the frozen weights
        return self.model(input_ids, cache=cache, positions=positions, attn_mask=attn_mask, output=output)

    def _refuse_changed_weights(self) -> None:
        if self._weights is not None and self._weights.changed():
            raise RuntimeError("the model's weights changed after compile_decoding(freeze=True) baked them into the "
                               "decode graph; compile the changed model afresh, or use freeze=False")

    def _frozen_step(
        self, token: torch.Tensor, cache: KVCache, positions: torch.Tensor | None, attn_mask: torch.Tensor | None
    ) -> torch.Tensor:
        """A step through a graph compiled for these inputs, or else one compiled now, frozen. Freezing is an
        Inductor setting that dynamo reads while it traces (weights as constants rather than inputs), so it must
        be set around the call that compiles -- passed as ``torch.compile(options=...)`` it left the graph
        unfrozen on torch 2.13 -- but setting it around every step cost ~0.1 ms of a 5.5 ms llama-55m step
        (measured), so steps first run under the ``fail_on_recompile`` stance and only a call that must compile
        is made again with it set."""
        try:
            with torch.compiler.set_stance("fail_on_recompile"):
                return self._step(token, cache, positions, attn_mask)
        except RuntimeError as error:
            if _RECOMPILE_REFUSED not in str(error):
                raise
        with torch._inductor.config.patch(_FREEZING):
            return self._step(token, cache, positions, attn_mask)

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


def _tensor_guards(entries: list[Any]) -> list[bool]:
    """Dynamo guard filter of frozen steps: keep the guards on the step's arguments (the cache's tensors and
    layout, the token and positions), drop those on modules and on module globals."""
    modules = torch.compiler.skip_guard_on_all_nn_modules_unsafe(entries)
    module_globals = torch.compiler.skip_guard_on_globals_unsafe(entries)
    return [keep_a and keep_b for keep_a, keep_b in zip(modules, module_globals, strict=True)]


class _FrozenWeights:
    """What every module of a model held when its weights were frozen into a graph: :meth:`changed` is true
    once a parameter, buffer or submodule is replaced, added or deleted (by identity), or a parameter or buffer
    is written in place (its version counter). The modules are walked once; a check reads the slots' dicts and
    the tensors' counters."""

    def __init__(self, model: CausalLM) -> None:
        modules = list(model.modules())  # type: ignore[attr-defined]
        self._owners = [slots for m in modules for slots in (m._modules, m._parameters, m._buffers)]
        # The objects themselves are held, so none of their ids can be reused by a replacement.
        self._held = [tuple(slots.values()) for slots in self._owners]
        self._held_ids = self._identities()
        self._tensors = [t for held in self._held for t in held if isinstance(t, torch.Tensor)]
        self._versions = self._tensor_versions()

    def changed(self) -> bool:
        return self._identities() != self._held_ids or self._tensor_versions() != self._versions

    def _identities(self) -> list[tuple[int, ...]]:
        return [tuple(map(id, slots.values())) for slots in self._owners]

    def _tensor_versions(self) -> list[int]:
        return [t._version for t in self._tensors]


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
