"""One tiny checkpoint and one ``lmplanes serve`` process for the server tests of a session."""

from __future__ import annotations

import openai
import pytest
import torch

import data
import model
import serve
import specs
from tests.serving import MAX_TOKENS_LIMIT, ServerProcess, write_tiny_checkpoint


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("served") / "tiny")


@pytest.fixture(scope="session")
def server(tiny_checkpoint, tmp_path_factory):
    process = ServerProcess(tiny_checkpoint, tmp_path_factory.mktemp("server") / "server.log",
                            "--max-tokens", str(MAX_TOKENS_LIMIT))
    yield process
    assert process.stop() == 0, process.log_path.read_text()


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="session")
def reference(tiny_checkpoint):
    """``greedy(prompt_ids, max_new_tokens) -> (text, ids)`` by serve.generate on the checkpoint, in this process."""
    lm = model.load_checkpoint(tiny_checkpoint).eval()
    tokenizer = data.load_tokenizer(tiny_checkpoint)

    def greedy(prompt_ids: list[int], max_new_tokens: int) -> tuple[str, list[int]]:
        out = serve.generate(lm, torch.tensor([prompt_ids]), specs.GenerationConfig(max_new_tokens=max_new_tokens))
        new = out[0, len(prompt_ids):].tolist()
        return tokenizer.decode(new, skip_special_tokens=True), new

    greedy.tokenizer = tokenizer  # type: ignore[attr-defined]
    return greedy

