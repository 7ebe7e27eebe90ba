"""``lmplanes chat``: an interactive conversation with a model, through its chat template.

Each line read from stdin is a user message; the reply streams to stdout. The whole conversation is sent
each turn (rendered by the model's chat template); when it outgrows the context, the oldest exchanges are
left out. ``/reset`` starts over (keeping ``--system``), ``/exit`` or end of input ends the chat.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from pack.errors import CommandError, report
from pack.generate_cmd import print_answer
from pack.model_source import add_compile_argument, add_model_arguments, served_model
from pack.sampling_args import add_sampling_arguments, generation_config

if TYPE_CHECKING:
    import serve

Message = dict[str, str]


def register(commands: Any) -> None:
    """Add ``chat`` to the ``lmplanes`` subparsers."""
    parser = commands.add_parser(
        "chat",
        help="talk with a model: one message per line, replies as they are generated",
        description="An interactive chat: each line on stdin is your message, and the model's reply is printed to "
        "stdout as it is generated. The conversation is rendered with the model's chat template (a plain 'Role: "
        "text' layout when it has none); the oldest exchanges are dropped when it outgrows the context. '/reset' "
        "starts over, '/exit' or end of input (Ctrl-D) ends the chat. Greedy unless --temperature is above 0.",
    )
    add_model_arguments(parser)
    add_compile_argument(parser)
    parser.add_argument("--system", metavar="TEXT", help="a system message that opens the conversation")
    add_sampling_arguments(parser, max_new_tokens=256)
    parser.set_defaults(run=run_chat, huge_pages=True)  # see pack.huge_pages


def run_chat(args: argparse.Namespace) -> int:
    opening: list[Message] = [{"role": "system", "content": args.system}] if args.system else []
    interactive = sys.stdin.isatty()
    with served_model(args) as served:
        generation_config(args, served, 0)  # the flags are checked before the first message
        conversation = list(opening)
        while True:
            if interactive:
                print("> ", end="", file=sys.stderr, flush=True)
            line = sys.stdin.readline()
            text = line.rstrip("\n")
            if not line or text.strip() == "/exit":
                return 0
            if text.strip() == "/reset":
                conversation = list(opening)
                print("(the conversation starts over)", file=sys.stderr)
                continue
            if not text.strip():
                continue
            try:
                asked, prompt_ids = _fitting_prompt(served, [*conversation, {"role": "user", "content": text}],
                                                    args.max_new_tokens, len(opening))
                cfg = generation_config(args, served, len(prompt_ids))
            except (CommandError, ValueError) as exc:  # this message cannot be answered; the chat goes on without it
                report(str(exc))
                continue
            reply, _ = print_answer(served, prompt_ids, cfg, args.stop)
            print()
            conversation = [*asked, {"role": "assistant", "content": reply.strip()}]


def _fitting_prompt(served: serve.ServedModel, conversation: list[Message], answer_room: int,
                    kept: int) -> tuple[list[Message], list[int]]:
    """The conversation less its oldest exchanges (never the first ``kept`` messages, nor the newest one), as few
    as leave ``answer_room`` tokens of the context (or one at least), and its prompt."""
    while True:
        ids = served.encode_chat(conversation)
        if len(ids) + answer_room <= served.context_len or len(conversation) - kept < 3:
            if len(ids) >= served.context_len:
                raise CommandError(f"the message makes a prompt of {len(ids)} tokens, over the model's context of "
                                   f"{served.context_len}; send a shorter one")
            return conversation, ids
        # The oldest user message and its reply go together, so roles keep alternating.
        conversation = conversation[:kept] + conversation[kept + 2:]
