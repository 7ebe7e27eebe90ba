"""``lmplanes serve`` through the official OpenAI client: completions and chat, whole and streamed, stop
strings, several answers, concurrent clients; greedy answers equal ``serve.generate`` on the same tokens."""

from __future__ import annotations

import json
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import serve
from tests.serving import MODEL_NAME


def test_completion_equals_serve_generate(client, reference):
    tokenizer = reference.tokenizer
    got = client.completions.create(model=MODEL_NAME, prompt="Hello", max_tokens=12, temperature=0)
    text, ids = reference(tokenizer.encode("Hello"), 12)
    assert got.object == "text_completion" and got.model == MODEL_NAME and got.id.startswith("cmpl-")
    assert [c.text for c in got.choices] == [text]
    assert got.choices[0].finish_reason == "length"
    assert (got.usage.prompt_tokens, got.usage.completion_tokens, got.usage.total_tokens) == (5, 12, 17)


def test_a_prompt_of_token_ids_is_the_same_prompt(client, reference):
    ids = reference.tokenizer.encode("Once upon a time")
    by_ids = client.completions.create(model=MODEL_NAME, prompt=ids, max_tokens=10, temperature=0)
    by_text = client.completions.create(model=MODEL_NAME, prompt="Once upon a time", max_tokens=10, temperature=0)
    assert by_ids.choices[0].text == by_text.choices[0].text == reference(ids, 10)[0]


def test_chat_completion_renders_the_template_and_equals_serve_generate(client, reference):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}]
    got = client.chat.completions.create(model=MODEL_NAME, messages=messages, max_tokens=9, temperature=0)
    prompt = serve.ChatTemplate().render(messages)
    assert prompt == "System: Be brief.\n\nUser: Hi there\n\nAssistant:"
    ids = reference.tokenizer.encode(prompt)
    assert got.object == "chat.completion" and got.id.startswith("chatcmpl-")
    assert got.choices[0].message.role == "assistant"
    assert got.choices[0].message.content == reference(ids, 9)[0]
    assert (got.usage.prompt_tokens, got.usage.completion_tokens) == (len(ids), 9)


def test_streamed_completion_is_the_whole_answer_in_pieces(client):
    whole = client.completions.create(model=MODEL_NAME, prompt="The quick brown fox", max_tokens=30, temperature=0)
    chunks = list(client.completions.create(model=MODEL_NAME, prompt="The quick brown fox", max_tokens=30,
                                            temperature=0, stream=True, stream_options={"include_usage": True}))
    pieces = [c.choices[0].text for c in chunks if c.choices]
    assert len(pieces) > 1 and "".join(pieces) == whole.choices[0].text
    assert all("\ufffd" not in piece[-1:] or piece is pieces[-1] for piece in pieces)  # no half characters held out
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 30


def test_streamed_chat_opens_with_the_role_then_streams_the_answer(client):
    messages = [{"role": "user", "content": "Tell me a story"}]
    whole = client.chat.completions.create(model=MODEL_NAME, messages=messages, max_tokens=20, temperature=0)
    chunks = list(client.chat.completions.create(model=MODEL_NAME, messages=messages, max_tokens=20, temperature=0,
                                                 stream=True))
    assert chunks[0].object == "chat.completion.chunk" and chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == whole.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == "length"


def test_stop_strings_cut_the_answer_before_them(client, reference):
    ids = reference.tokenizer.encode("abc")
    text, _ = reference(ids, 40)
    stop = "__3"  # spans tokens; greedy output begins '\ufffd____3'
    assert stop in text
    got = client.completions.create(model=MODEL_NAME, prompt="abc", max_tokens=40, temperature=0, stop=[stop, "zzz"])
    assert got.choices[0].text == text[: text.index(stop)]
    assert got.choices[0].finish_reason == "stop" and got.usage.completion_tokens < 40
    streamed = client.completions.create(model=MODEL_NAME, prompt="abc", max_tokens=40, temperature=0, stop=stop,
                                         stream=True)
    chunks = list(streamed)
    assert "".join(c.choices[0].text for c in chunks) == got.choices[0].text  # no piece of the stop string leaks
    assert chunks[-1].choices[0].finish_reason == "stop"
    chat = client.chat.completions.create(model=MODEL_NAME, messages=[{"role": "user", "content": "x"}], max_tokens=40,
                                          temperature=0, stop="\ufffd")
    assert "\ufffd" not in chat.choices[0].message.content and chat.choices[0].finish_reason == "stop"


def test_n_answers_each_with_a_seed_derived_from_the_request_seed(client):
    many = client.completions.create(model=MODEL_NAME, prompt="1, 2, 3,", max_tokens=8, n=3, seed=7)
    assert [c.index for c in many.choices] == [0, 1, 2]
    texts = [c.text for c in many.choices]
    assert len(set(texts)) > 1  # sampled (OpenAI's default temperature is 1)
    for k, text in enumerate(texts):
        alone = client.completions.create(model=MODEL_NAME, prompt="1, 2, 3,", max_tokens=8, seed=7 + k)
        assert alone.choices[0].text == text
    assert many.usage.prompt_tokens == 8 and many.usage.completion_tokens == 24
    again = client.completions.create(model=MODEL_NAME, prompt="1, 2, 3,", max_tokens=8, n=3, seed=7, stream=True)
    streamed = ["", "", ""]
    for chunk in again:
        streamed[chunk.choices[0].index] += chunk.choices[0].text
    assert streamed == texts


def test_a_batch_of_prompts_gives_n_choices_per_prompt_in_order(client, reference):
    prompts = ["abc", "Hello"]
    got = client.completions.create(model=MODEL_NAME, prompt=prompts, max_tokens=6, temperature=0, n=2)
    expected = [reference(reference.tokenizer.encode(p), 6)[0] for p in prompts]
    assert [c.text for c in got.choices] == [expected[0], expected[0], expected[1], expected[1]]
    assert got.usage.prompt_tokens == 3 + 5


def test_sixteen_concurrent_clients_get_what_sequential_requests_get(client):
    prompts = [f"Request number {i}: " for i in range(16)]

    def ask(prompt: str) -> str:
        return client.completions.create(model=MODEL_NAME, prompt=prompt, max_tokens=8, temperature=0).choices[0].text

    sequential = [ask(p) for p in prompts]
    with ThreadPoolExecutor(max_workers=16) as pool:
        concurrent = list(pool.map(ask, prompts))
    assert concurrent == sequential


def test_models_health_and_metrics(client, server):
    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL_NAME]
    assert client.models.retrieve(MODEL_NAME).id == MODEL_NAME
    with urllib.request.urlopen(f"{server.url}/health") as response:
        assert json.load(response) == {"status": "ok", "model": MODEL_NAME}
    client.completions.create(model=MODEL_NAME, prompt="abc", max_tokens=3, temperature=0)
    with urllib.request.urlopen(f"{server.url}/metrics") as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        metrics = response.read().decode()
    for line in ('lmplanes_requests_total{endpoint="/v1/completions",status="200"}',
                 "lmplanes_prompt_tokens_total ", "lmplanes_completion_tokens_total ",
                 'lmplanes_time_to_first_token_seconds_count{endpoint="/v1/completions"}',
                 'lmplanes_request_duration_seconds_bucket{endpoint="/v1/models",le="0.005"}',
                 "lmplanes_requests_in_flight 1.0",  # the /metrics request itself
                 "lmplanes_kv_cache_tokens 0.0", "lmplanes_kv_cache_usage 0.0",
                 "lmplanes_kv_cache_capacity_tokens 4096.0"):  # --max-batch 8 rows of the 512-token context
        assert line in metrics, line
