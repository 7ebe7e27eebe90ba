"""The decoding flags of ``lmplanes generate`` and ``lmplanes chat``, and their :class:`specs.GenerationConfig`.

The flags mean what the server's request fields of the same names mean (``--temperature 0`` is greedy, the
default here, so a command gives the same answer twice unless asked to sample).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from pack.errors import CommandError, UsageError

if TYPE_CHECKING:
    import serve
    import specs


def add_sampling_arguments(parser: argparse.ArgumentParser, *, max_new_tokens: int) -> None:
    parser.add_argument("--max-new-tokens", type=int, default=max_new_tokens, metavar="N",
                        help=f"the most tokens to generate, within what the context leaves (default {max_new_tokens})")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 is greedy decoding (default); above 0 samples")
    parser.add_argument("--top-p", type=float, help="sample from the most likely tokens up to this total probability")
    parser.add_argument("--top-k", type=int, help="sample from the K most likely tokens")
    parser.add_argument("--min-p", type=float, help="drop tokens less likely than this times the most likely one")
    parser.add_argument("--repetition-penalty", type=float, default=1.0, help="above 1 discourages tokens already present")
    parser.add_argument("--frequency-penalty", type=float, default=0.0, help="OpenAI's, in [-2, 2]")
    parser.add_argument("--presence-penalty", type=float, default=0.0, help="OpenAI's, in [-2, 2]")
    parser.add_argument("--seed", type=int, help="makes sampling reproducible")
    parser.add_argument("--stop", action="append", default=[], metavar="TEXT",
                        help="end the answer before this text (repeatable)")


def generation_config(args: argparse.Namespace, served: serve.ServedModel, prompt_len: int) -> specs.GenerationConfig:
    """The settings for one answer to a prompt of ``prompt_len`` tokens."""
    import serve
    import specs

    room = served.context_len - prompt_len
    if room < 1:
        raise CommandError(f"the prompt is {prompt_len} tokens and the model's context {served.context_len}: no room "
                           "is left for an answer")
    if any(not text for text in args.stop):
        raise UsageError("--stop: a stop string must not be empty")
    try:
        return serve.sampling_config(
            max_new_tokens=min(args.max_new_tokens, room),
            temperature=args.temperature,
            top_p=args.top_p,
            top_k=args.top_k,
            min_p=args.min_p,
            repetition_penalty=args.repetition_penalty,
            frequency_penalty=args.frequency_penalty,
            presence_penalty=args.presence_penalty,
            seed=args.seed,
            eos_token_ids=served.eos_token_ids,
        )
    except specs.FieldProblem as exc:
        raise UsageError(f"--{exc.field.replace('_', '-')}: {exc.reason}") from None
