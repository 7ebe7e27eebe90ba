"""``lmplanes generate`` and ``lmplanes chat`` on a checkpoint with its tokenizer: greedy text equal to
``serve.generate``'s, streamed as it is made, a chat that outgrows the context, and mistakes in one line."""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass

import data
import model
import serve
import specs
from pack.chat_cmd import _fitting_prompt
from pack.cli import main
from pack.generate_cmd import print_answer
from pack.model_source import served_model
from tests.serving import ROOT


def test_generate_prints_the_greedy_continuation(tiny_checkpoint, reference, capsys):
    assert main(["generate", "--checkpoint", str(tiny_checkpoint), "--prompt", "Hello", "--max-new-tokens", "12"]) == 0
    out, err = capsys.readouterr()
    assert out == reference(reference.tokenizer.encode("Hello"), 12)[0] + "\n"
    assert err.startswith("12 tokens in ") and "stopped by the length limit" in err


def test_generate_with_a_compiled_decode_step_prints_the_same_text(tiny_checkpoint, reference, capsys):
    """``--compile``: the decode steps run through ``serve.compile_decoding(freeze=True)`` (float32: the eager
    logits to ~1e-5, tests/serve/test_compiled.py), so greedy text is the eager text."""
    import torch

    torch._dynamo.reset()
    assert main(["generate", "--checkpoint", str(tiny_checkpoint), "--prompt", "Hello", "--max-new-tokens", "12",
                 "--compile"]) == 0
    out, _ = capsys.readouterr()
    assert out == reference(reference.tokenizer.encode("Hello"), 12)[0] + "\n"
    torch._dynamo.reset()


def test_compile_with_the_batching_engine_is_refused_before_loading(tmp_path, capsys):
    """The engine decodes over a paged cache, eagerly: ``--compile`` with ``--max-batch`` above 1 would do
    nothing, so it is a usage error, reported before the (missing) checkpoint is even looked at."""
    from pack.errors import EXIT_USAGE

    assert main(["serve", "--checkpoint", str(tmp_path / "absent"), "--compile", "--max-batch", "2"]) == EXIT_USAGE
    assert "--compile compiles the decode step of one request at a time" in capsys.readouterr().err


def test_generate_stops_before_a_stop_string(tiny_checkpoint, reference, capsys):
    text, _ = reference(reference.tokenizer.encode("abc"), 40)
    assert main(["generate", "--checkpoint", str(tiny_checkpoint), "--prompt", "abc", "--max-new-tokens", "40",
                 "--stop", "__3"]) == 0
    out, err = capsys.readouterr()
    assert out == text[: text.index("__3")] + "\n" and "stopped by end of text or a stop string" in err


class _Writes(io.StringIO):
    """A text stream that keeps each write apart."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)


def test_the_answer_is_written_as_it_is_generated(tiny_checkpoint):
    args = argparse.Namespace(checkpoint=str(tiny_checkpoint), gguf=None, device="cpu", dtype=None, quantize=None)
    out = _Writes()
    with served_model(args) as served:
        ids = served.encode("Once upon a time")
        text, last = print_answer(served, ids, serve.sampling_config(max_new_tokens=20, temperature=0), (), out)
    assert len([w for w in out.writes if w]) > 1 and "".join(out.writes) == text
    assert (last.tokens, last.finish_reason) == (20, "length")


def test_chat_over_a_stdin_pipe_keeps_the_conversation(tiny_checkpoint, reference):
    def reply(messages: list[dict[str, str]]) -> str:
        return reference(reference.tokenizer.encode(serve.ChatTemplate().render(messages)), 6)[0]

    first = reply([{"role": "user", "content": "Hi"}])
    second = reply([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": first.strip()},
                    {"role": "user", "content": "Again"}])
    lines = ["Hi", "x" * 600, "Again", "/reset", "", "Hi", "/exit", "never read"]
    done = subprocess.run([sys.executable, "-m", "pack", "chat", "--checkpoint", str(tiny_checkpoint),
                           "--max-new-tokens", "6"], input="\n".join(lines) + "\n", capture_output=True, cwd=ROOT,
                          encoding="utf-8", env={**os.environ, "PYTHONIOENCODING": "utf-8", "OMP_NUM_THREADS": "1"},
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{first}\n{second}\n{first}\n"  # the too-long message was left out, /reset forgot the rest
    assert "lmplanes: error: the message makes a prompt of 618 tokens, over the model's context of 512" in done.stderr
    assert "(the conversation starts over)" in done.stderr


def test_text_command_mistakes_are_one_line(tiny_checkpoint, tmp_path, capsys):
    no_tokenizer = tmp_path / "bare"
    shutil.copytree(tiny_checkpoint, no_tokenizer)
    (no_tokenizer / "tokenizer.json").unlink()
    cases = [
        (["generate", "--checkpoint", str(tmp_path), "--prompt", "Hi"], "not a checkpoint directory (no config.json)"),
        (["generate", "--checkpoint", str(no_tokenizer), "--prompt", "Hi"], "generating text needs the checkpoint's tokenizer"),
        (["generate", "--checkpoint", str(tiny_checkpoint), "--prompt", ""], "--prompt must not be empty"),
        (["generate", "--checkpoint", str(tiny_checkpoint), "--prompt", "x" * 512], "no room is left for an answer"),
        (["generate", "--checkpoint", str(tiny_checkpoint), "--prompt", "Hi", "--temperature", "-1"], "--temperature: must be >= 0"),
        (["generate", "--checkpoint", str(tiny_checkpoint), "--prompt", "Hi", "--stop", ""], "--stop: a stop string must not be empty"),
        (["generate", "--checkpoint", str(tiny_checkpoint), "--prompt", "Hi", "--device", "gpu0"], "is not a device"),
        (["chat", "--gguf", str(tmp_path / "m.gguf")], "no such file"),
        (["generate", "--gguf", str(no_tokenizer / "config.json"), "--prompt", "Hi"], "config.json: "),
    ]
    for argv, message in cases:
        assert main(argv) != 0, argv
        err = capsys.readouterr().err
        assert err.startswith("lmplanes: error: ") and message in err and err.count("\n") == 1, (argv, err)


@dataclass
class _Served:
    """As much of a served model as fitting a prompt needs: one token per character of the rendered chat."""

    context_len: int

    def encode_chat(self, messages: list[dict[str, str]]) -> list[int]:
        return [0] * len(serve.ChatTemplate().render(messages))


def test_a_chat_that_outgrows_the_context_drops_its_oldest_exchanges():
    system = {"role": "system", "content": "Be kind."}
    exchanges = [{"role": r, "content": f"{r} {i}"} for i in range(3) for r in ("user", "assistant")]
    conversation = [system, *exchanges, {"role": "user", "content": "last"}]
    served = _Served(context_len=len(serve.ChatTemplate().render([system, *exchanges[4:], conversation[-1]])) + 10)
    kept, ids = _fitting_prompt(served, conversation, 10, kept=1)
    assert kept == [system, *exchanges[4:], conversation[-1]] and len(ids) + 10 == served.context_len


def test_an_encoder_checkpoint_is_refused_in_one_line(tmp_path, capsys):
    from tests.model.test_encoder import BERT_TINY

    cfg = specs.from_dict({**BERT_TINY, "vocab_size": 300})
    folder = model.save_checkpoint(model.build(cfg), tmp_path / "bert", extra=data.byte_tokenizer(eos_token=None).save)
    assert main(["generate", "--checkpoint", str(folder), "--prompt", "Hi"]) == 1
    err = capsys.readouterr().err
    assert err == f"lmplanes: error: {folder}: the model is an encoder; only a decoder generates text\n"


def test_max_len_caps_a_request_and_the_engine_cache(tiny_checkpoint):
    """``lmplanes serve --max-len``: requests are limited to it (the server refuses longer ones as over the
    context) and the engine's rows are that long, not the model's whole context."""
    from pack.model_source import load_served_model

    args = argparse.Namespace(checkpoint=str(tiny_checkpoint), gguf=None, device="cpu", dtype=None, quantize=None)
    served = load_served_model(args, max_batch=2, max_len=100)
    try:
        assert served.context_len == 100
        assert served.backend.cache_usage().capacity == 2 * 112  # two rows of 100 tokens in whole 16-token blocks
    finally:
        asyncio.run(served.backend.aclose())
