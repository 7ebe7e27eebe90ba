"""The CLI's subcommands and flags are a public surface: changing them is a deliberate edit to this snapshot.

A subcommand arrives with the plane that does its work (``train``, ``generate``, ``serve`` ...); add it here
in the same change.
"""

from __future__ import annotations

import argparse

from pack.cli import build_parser

MODEL = {"--checkpoint", "--gguf", "--device", "--dtype", "--quantize"}
SAMPLING = {
    "--max-new-tokens", "--temperature", "--top-p", "--top-k", "--min-p", "--repetition-penalty", "--frequency-penalty",
    "--presence-penalty", "--seed", "--stop",
}
SURFACE = {
    "": {"--help", "-h", "--version"},
    "config": {"--help", "-h"},
    "config new": {"--help", "-h", "--preset", "-o", "--output", "--format", "--set", "--force"},
    "config validate": {"--help", "-h"},
    "config show": {"--help", "-h", "--set", "--format", "--sizes"},
    "checkpoint": {"--help", "-h"},
    "checkpoint verify": {"--help", "-h"},
    "checkpoint show": {"--help", "-h", "--json"},
    "checkpoint consolidate": {"--help", "-h", "--out", "--overwrite"},
    "checkpoint shard": {"--help", "-h", "--out", "--config"},
    "convert": {"--help", "-h", "--hf", "--checkpoint", "--gguf", "--out", "--to", "--dtype", "--overwrite"},
    "data": {"--help", "-h"},
    "data build": {
        "--help", "-h", "--input", "--outdir", "--tokenizer", "--shard-size-tokens", "--dedup", "--redact-pii",
        "--val-fraction", "--split-by", "--seed", "--doc-sep", "--license", "--dtype", "--overwrite",
    },
    "data verify": {"--help", "-h"},
    "train": {"--help", "-h", "--out", "--resume", "--set", "--quiet", "--nproc"},
    "generate": {"--help", "-h", *MODEL, *SAMPLING, "--prompt", "--compile"},
    "chat": {"--help", "-h", *MODEL, *SAMPLING, "--system", "--compile"},
    "serve": {
        "--help", "-h", *MODEL, "--compile", "--host", "--port", "--api-key", "--model-name", "--max-tokens", "--max-batch", "--max-len",
        "--shutdown-timeout", "--embedding-model", "--embedding-model-name",
    },
    "eval": {"--help", "-h"},
    "eval ppl": {"--help", "-h", *MODEL, "--text", "--context", "--stride", "--batch", "--json"},
    "eval perf": {"--help", "-h", *MODEL, "--prompt-tokens", "--new-tokens", "--batch", "--peak-tflops", "--json", "--out"},
    "eval harness": set(),  # everything after it is lm_eval's own command line
    "eval tasks": {"--help", "-h"},
    "rag": {"--help", "-h"},
    "rag index": {
        "--help", "-h", "--out", "--overwrite", "--encoder", "--batch-size", "--device", "--chunker", "--max-chars",
        "--chunk-tokens", "--overlap", "--index", "--no-bm25",
    },
    "rag search": {"--help", "-h", "--k", "--mode", "--encoder", "--batch-size", "--device"},
    "rag ask": {"--help", "-h", "--k", "--mode", "--encoder", "--batch-size", *MODEL, *SAMPLING},
    "export": {"--help", "-h"},
    "export onnx": {"--help", "-h", "--checkpoint", "--out", "--overwrite", "--opset"},
    "export pt2": {"--help", "-h", "--checkpoint", "--out", "--overwrite"},
    "export int8": {
        "--help", "-h", "--checkpoint", "--out", "--overwrite", "--keep-float", "--compute-dtype", "--eval-text",
        "--eval-tokens",
    },
    "export hf": {"--help", "-h", "--checkpoint", "--out", "--overwrite"},
    "export modelpack": {"--help", "-h", "--checkpoint", "--out"},
    "export unpack": {"--help", "-h", "--out", "--cache"},
    "env": {"--help", "-h"},
}


def _walk(parser: argparse.ArgumentParser, path: str = "") -> dict[str, set[str]]:
    found = {path: {opt for action in parser._actions for opt in action.option_strings}}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.update(_walk(sub, f"{path} {name}".strip()))
    return found


def test_cli_surface_is_frozen() -> None:
    assert _walk(build_parser()) == SURFACE


def test_every_leaf_command_has_a_runner() -> None:
    parser = build_parser()
    leaves = {
        "config new": ["config", "new", "llama-tiny"],
        "config validate": ["config", "validate", "x.yaml"],
        "config show": ["config", "show", "x.yaml"],
        "checkpoint verify": ["checkpoint", "verify", "ckpt"],
        "checkpoint show": ["checkpoint", "show", "ckpt"],
        "checkpoint consolidate": ["checkpoint", "consolidate", "ckpt", "--out", "one"],
        "checkpoint shard": ["checkpoint", "shard", "ckpt", "--out", "sharded"],
        "convert": ["convert", "--hf", "hf", "--out", "ckpt"],
        "data build": ["data", "build", "--input", "a.txt", "--outdir", "out", "--tokenizer", "char"],
        "data verify": ["data", "verify", "out"],
        "train": ["train", "gpt-shakespeare-char", "--out", "run"],
        "generate": ["generate", "--checkpoint", "ckpt", "--prompt", "Hi"],
        "chat": ["chat", "--checkpoint", "ckpt"],
        "serve": ["serve", "--checkpoint", "ckpt"],
        "eval ppl": ["eval", "ppl", "--checkpoint", "ckpt"],
        "eval perf": ["eval", "perf", "--checkpoint", "ckpt"],
        "eval harness": ["eval", "harness", "run", "--model", "lmplanes"],
        "eval tasks": ["eval", "tasks", "dir"],
        "rag index": ["rag", "index", "docs", "--out", "idx"],
        "rag search": ["rag", "search", "idx", "question"],
        "rag ask": ["rag", "ask", "idx", "question", "--gguf", "m.gguf"],
        "export onnx": ["export", "onnx", "--checkpoint", "ckpt", "--out", "out"],
        "export pt2": ["export", "pt2", "--checkpoint", "ckpt", "--out", "out"],
        "export int8": ["export", "int8", "--checkpoint", "ckpt", "--out", "out"],
        "export hf": ["export", "hf", "--checkpoint", "ckpt", "--out", "out"],
        "export modelpack": ["export", "modelpack", "--checkpoint", "ckpt", "--out", "out"],
        "export unpack": ["export", "unpack", "pack", "--out", "out"],
        "env": ["env"],
    }
    assert set(leaves) == set(SURFACE) - {"", "config", "checkpoint", "data", "eval", "export", "rag"}
    for path, argv in leaves.items():
        assert callable(parser.parse_args(argv).run), path


def _parsers(parser: argparse.ArgumentParser, path: str = "") -> dict[str, argparse.ArgumentParser]:
    found = {path: parser}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.update(_parsers(sub, f"{path} {name}".strip()))
    return found


def test_help_texts_are_plain_words_for_users() -> None:
    """--help is read by users: no Sphinx/RST markup, no notes on how the command is implemented."""
    for path, parser in _parsers(build_parser()).items():
        text = parser.format_help()
        for marker in ("``", ":mod:", ":func:", ":class:", "lazily", "import"):
            assert marker not in text, f"'lmplanes {path} --help' shows {marker!r}:\n{text}"
