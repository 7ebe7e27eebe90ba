"""OpenAI's sampling parameters as a :class:`specs.GenerationConfig`, for the server and the command line.

OpenAI samples unless ``temperature`` is 0, which means greedy decoding; Hugging Face (and
``GenerationConfig``) says ``do_sample``. Settings that only shape sampling (``top_p``, ``top_k``, ``min_p``) mean
nothing to greedy decoding, so they are dropped there instead of refused, as OpenAI does; ``top_p`` 1 keeps
every token, which is no setting at all.
"""

from __future__ import annotations

from collections.abc import Sequence

from specs.config_io import FieldProblem
from specs.generation_config import GenerationConfig


def sampling_config(
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float | None = None,
    top_k: int | None = None,
    min_p: float | None = None,
    repetition_penalty: float = 1.0,
    frequency_penalty: float = 0.0,
    presence_penalty: float = 0.0,
    seed: int | None = None,
    eos_token_ids: Sequence[int] = (),
) -> GenerationConfig:
    """One answer's decoding settings (``n`` answers and stop strings are handled by the caller). Raises
    ``specs.FieldProblem`` (a ``ValueError``) naming the field of a value out of range."""
    if temperature < 0:
        raise FieldProblem("temperature", f"must be >= 0 (0 is greedy decoding), got {temperature}")
    sample = temperature > 0
    return GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=sample,
        temperature=temperature if sample else 1.0,
        top_p=top_p if sample and top_p is not None and top_p < 1.0 else None,
        top_k=top_k if sample else None,
        min_p=min_p if sample else None,
        repetition_penalty=repetition_penalty,
        frequency_penalty=frequency_penalty,
        presence_penalty=presence_penalty,
        seed=seed,
        eos_token_ids=tuple(eos_token_ids),
    )
