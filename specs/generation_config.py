"""GenerationConfig: how a decode loop in ``serve`` turns logits into tokens."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from specs.config_io import FieldProblem, config_kind


@config_kind("generation", version=1)
@dataclass(frozen=True, kw_only=True, slots=True)
class GenerationConfig:
    """Sampling settings. ``temperature == 0`` means greedy decoding."""

    KIND: ClassVar[str]  # set by config_kind
    VERSION: ClassVar[int]


    max_new_tokens: int = 32
    temperature: float = 0.0
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float = 1.0
    eos_token_ids: tuple[int, ...] = ()
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise FieldProblem("max_new_tokens", f"must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise FieldProblem("temperature", f"must be >= 0, got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise FieldProblem("top_k", f"must be >= 1, got {self.top_k}")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise FieldProblem("top_p", f"must be in (0, 1], got {self.top_p}")
        if self.repetition_penalty <= 0:
            raise FieldProblem("repetition_penalty", f"must be > 0, got {self.repetition_penalty}")
        if self.temperature == 0 and (self.top_k is not None or self.top_p is not None):
            raise FieldProblem("temperature", "is 0 (greedy) but top_k/top_p are set; they only apply when sampling")
