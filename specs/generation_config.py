"""GenerationConfig: how a decode loop in ``serve`` turns logits into tokens.

Names and meanings follow Hugging Face ``generate`` where they agree (``max_new_tokens``, ``do_sample``,
``temperature``, ``top_k``, ``top_p``, ``min_p``, ``repetition_penalty``, ``num_beams``, ``length_penalty``,
``early_stopping``, ``eos_token_ids``, ``pad_token_id``), and OpenAI's for what Hugging Face lacks
(``frequency_penalty``, ``presence_penalty``, ``stop`` strings, ``n``). Processing order, as in Hugging Face:
repetition penalty, then the frequency and presence penalties, then (sampling only) temperature, top-k,
top-p, min-p.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from specs.config_io import FieldProblem, config_kind, register_migration


@config_kind("generation", version=2)
@dataclass(frozen=True, kw_only=True, slots=True)
class GenerationConfig:
    """Decoding settings. ``do_sample=False`` is greedy (or beam search with ``num_beams > 1``)."""

    KIND: ClassVar[str]  # set by config_kind
    VERSION: ClassVar[int]

    max_new_tokens: int = 32
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    repetition_penalty: float = 1.0  # > 1 discourages every token already in the sequence (prompt included)
    frequency_penalty: float = 0.0  # subtracted per earlier occurrence of a token among the generated ones
    presence_penalty: float = 0.0  # subtracted once from every token generated so far
    num_beams: int = 1
    length_penalty: float = 1.0  # beam scores are divided by length ** length_penalty
    early_stopping: bool = False  # beam search stops once num_beams hypotheses are finished
    eos_token_ids: tuple[int, ...] = ()
    pad_token_id: int | None = None  # what finished rows are filled with (default: the first eos id, else 0)
    stop: tuple[str, ...] = ()  # stop strings: generation ends when the generated text contains one
    n: int = 1  # sequences per prompt (sampling)
    seed: int | None = None  # makes sampling reproducible per request

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise FieldProblem("max_new_tokens", f"must be >= 1, got {self.max_new_tokens}")
        if self.temperature <= 0:
            raise FieldProblem("temperature", f"must be > 0 (greedy decoding is do_sample: false), got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise FieldProblem("top_k", f"must be >= 1, got {self.top_k}")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise FieldProblem("top_p", f"must be in (0, 1], got {self.top_p}")
        if self.min_p is not None and not 0.0 <= self.min_p <= 1.0:
            raise FieldProblem("min_p", f"must be in [0, 1], got {self.min_p}")
        if self.repetition_penalty <= 0:
            raise FieldProblem("repetition_penalty", f"must be > 0, got {self.repetition_penalty}")
        for name in ("frequency_penalty", "presence_penalty"):
            if not -2.0 <= getattr(self, name) <= 2.0:
                raise FieldProblem(name, f"must be in [-2, 2], got {getattr(self, name)}")
        if self.num_beams < 1:
            raise FieldProblem("num_beams", f"must be >= 1, got {self.num_beams}")
        if self.n < 1:
            raise FieldProblem("n", f"must be >= 1, got {self.n}")
        if self.n > 1 and not self.do_sample and self.num_beams == 1:
            raise FieldProblem("n", f"is {self.n} but greedy decoding gives one answer; set do_sample: true")
        if self.num_beams > 1 and self.do_sample:
            raise FieldProblem("num_beams", "beam search with sampling is not supported; set do_sample: false")
        if any(not s for s in self.stop):
            raise FieldProblem("stop", "stop strings must not be empty")
        # Answer k of n draws from a generator seeded seed + k; torch seeds are unsigned 64-bit integers.
        if self.seed is not None and not 0 <= self.seed <= 2**64 - self.n:
            raise FieldProblem("seed", f"must be in [0, 2**64 - n] (here {2**64 - self.n}), got {self.seed}")
        sampling_only = [k for k in ("top_k", "top_p", "min_p") if getattr(self, k) is not None]
        if sampling_only and not self.do_sample:
            raise FieldProblem(sampling_only[0], "only applies when sampling; set do_sample: true")

    @property
    def fill_id(self) -> int:
        """The token finished rows are padded with."""
        if self.pad_token_id is not None:
            return self.pad_token_id
        return self.eos_token_ids[0] if self.eos_token_ids else 0


@register_migration("generation", from_version=1)
def _generation_v1_to_v2(old: dict[str, Any]) -> dict[str, Any]:
    """v1 meant greedy by ``temperature: 0``; v2 says ``do_sample`` as Hugging Face does."""
    new = dict(old)
    temperature = new.get("temperature", 0.0)
    new["do_sample"] = bool(temperature and temperature > 0)
    if not new["do_sample"]:
        new.pop("temperature", None)
    return new
