"""Helpers for the tests of serving: a tiny checkpoint with its tokenizer, and ``lmplanes serve`` as a process.

The checkpoint is llama-tiny with sharper random weights (``init_std=0.1``, so greedy choices are far from
ties), a 512-token context (room for long streams) and the byte tokenizer without an end-of-sequence token
(answers end by length or a stop string, so their lengths are known in advance).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import torch

import data
import model
import specs

ROOT = Path(__file__).resolve().parents[1]
MODEL_NAME = "tiny"
MAX_TOKENS_LIMIT = 450  # the shared server's --max-tokens (its context is 512)


def write_tiny_checkpoint(folder: Path, *, chat_template: str | None = None) -> Path:
    cfg = specs.apply_overrides(specs.load_preset("llama-tiny"), ["init_std=0.1", "max_seq_len=512"])
    torch.manual_seed(0)
    lm = model.build(cfg).eval()
    tokenizer = data.byte_tokenizer(eos_token=None)

    def add_tokenizer(target: Path) -> None:
        tokenizer.save(target)
        if chat_template is not None:
            config_file = target / "tokenizer_config.json"
            config = json.loads(config_file.read_text())
            config_file.write_text(json.dumps({**config, "chat_template": chat_template}))

    return model.save_checkpoint(lm, folder, extra=add_tokenizer)


class ServerProcess:
    """``lmplanes serve --port 0`` in a subprocess; ``url`` once it listens. Its log goes to ``log_path``."""

    def __init__(self, source: Path, log_path: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.log_path = log_path
        self.log = log_path.open("w")
        self.copier: threading.Thread | None = None
        kind = "--gguf" if source.suffix == ".gguf" else "--checkpoint"  # a GGUF file, or a checkpoint directory
        command = [sys.executable, "-m", "pack", "serve", kind, str(source), "--port", "0",
                   "--model-name", MODEL_NAME, *args]
        # One thread: a model this small gains nothing from two, and on a busy machine the threads of several
        # test processes spinning against each other make each token ten times slower.
        environment = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
        self.proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=self.log, text=True,
                                     env=environment)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # "serving tiny at http://127.0.0.1:PORT/v1 ..." once it listens
        found = re.search(r"(http://\S+)/v1", line)
        if not found:
            self.stop()
            raise AssertionError(f"the server did not start: {line!r}\n{log_path.read_text()}")
        # The access log follows on stdout: copy it to the log, or a full pipe would stall the server.
        self.copier = threading.Thread(target=shutil.copyfileobj, args=(self.proc.stdout, self.log), daemon=True)
        self.copier.start()
        self.url = found.group(1)
        self.host, self.port = self.url.removeprefix("http://").rsplit(":", 1)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        code = self.proc.wait(timeout=60)
        if self.copier is not None:
            self.copier.join(timeout=10)  # it ends at the end of the process's output
        self.log.close()
        return code
