"""Bad requests to ``lmplanes serve`` get OpenAI's error body with a 4xx status, and the server keeps serving;
a client that goes away mid-answer has its request cancelled."""

from __future__ import annotations

import http.client
import json
import re
import socket
import time
import urllib.error
import urllib.request

import openai
import pytest

from tests.serving import MAX_TOKENS_LIMIT, MODEL_NAME


def post(server, path: str, body: bytes | dict, method: str = "POST") -> tuple[int, dict]:
    """``(status, JSON body)`` of a raw request (the OpenAI client would refuse to send most of these)."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(f"{server.url}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def still_serving(client) -> None:
    got = client.completions.create(model=MODEL_NAME, prompt="ok", max_tokens=2, temperature=0)
    assert got.usage.completion_tokens == 2


def error_of(status: int, body: dict, expected_status: int) -> dict:
    assert status == expected_status, body
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["type"] == ("server_error" if status >= 500 else "invalid_request_error")
    return body["error"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "The request body is not valid JSON"),
        (b"\xff\xfe", "The request body is not valid JSON"),
        (b"[1, 2]", "The request body must be a JSON object, got list"),
    ],
)
def test_a_body_that_is_not_a_json_object_is_refused(server, client, body, message):
    error = error_of(*post(server, "/v1/completions", body), 400)
    assert error["message"].startswith(message)
    still_serving(client)


@pytest.mark.parametrize(
    ("field", "value", "param", "message"),
    [
        ("max_tokens", "5", "max_tokens", "Invalid value for 'max_tokens'"),
        ("max_tokens", 0, "max_tokens", "greater than or equal to 1"),
        ("max_tokens", -3, "max_tokens", "greater than or equal to 1"),
        ("max_tokens", 2.5, "max_tokens", "Invalid value for 'max_tokens'"),
        ("max_tokens", MAX_TOKENS_LIMIT + 1, "max_tokens", f"over this server's limit of {MAX_TOKENS_LIMIT}"),
        ("temperature", "hot", "temperature", "Invalid value for 'temperature'"),
        ("temperature", 2.5, "temperature", "less than or equal to 2"),
        ("stream", 1, "stream", "Invalid value for 'stream'"),
        ("n", 0, "n", "greater than or equal to 1"),
        ("seed", 10**30, "seed", "less than or equal to"),
        ("seed", -1, "seed", "greater than or equal to 0"),
        ("prompt", {"text": "hi"}, "prompt", "must be a string, a list of strings, a list of token ids"),
        ("prompt", [], "prompt", "prompt must not be empty"),
        ("prompt", [1, 300], "prompt", "token id 300 is outside the model's vocabulary (0 to 255)"),
        ("stop", ["a", 3], "stop", "must be a string or a list of strings"),
        ("stop", "", "stop", "stop strings must not be empty"),
        ("stream_options", {"include_usage": True}, "stream_options", "only allowed when stream is true"),
        ("logprobs", 3, "logprobs", "logprobs is not supported by this server"),
        ("max_tokenz", 5, "max_tokenz", "Unrecognized request argument supplied: max_tokenz"),
    ],
)
def test_a_completion_field_of_the_wrong_type_or_range_names_the_field(server, client, field, value, param, message):
    body = {"model": MODEL_NAME, "prompt": "Hello", "max_tokens": 4, field: value}
    error = error_of(*post(server, "/v1/completions", body), 400)
    assert error["param"] == param and message in error["message"], error
    still_serving(client)


@pytest.mark.parametrize(
    ("messages", "param", "message"),
    [
        ([], "messages", "at least 1 item"),
        ("hi", "messages", "Invalid value for 'messages'"),
        ([{"role": "robot", "content": "hi"}], "messages.[0].role", "Invalid value for 'messages.[0].role'"),
        ([{"role": "user", "content": 5}], "messages.[0].content", "must be a string or a list of text parts"),
        ([{"role": "user"}], "messages.[0].content", "Field required"),
    ],
)
def test_chat_messages_of_the_wrong_shape_name_the_message(server, client, messages, param, message):
    error = error_of(*post(server, "/v1/chat/completions", {"model": MODEL_NAME, "messages": messages}), 400)
    assert error["param"] == param and message in error["message"], error
    still_serving(client)


def test_an_unknown_model_is_a_404_the_client_recognises(client):
    with pytest.raises(openai.NotFoundError) as caught:
        client.completions.create(model="gpt-4", prompt="Hello", max_tokens=3)
    assert caught.value.code == "model_not_found" and "this server serves 'tiny'" in caught.value.message
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4")
    still_serving(client)


def test_a_prompt_over_the_context_is_refused_before_any_decoding(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model=MODEL_NAME, prompt="x" * 600, max_tokens=4)  # 600 byte tokens; context 512
    assert caught.value.code == "context_length_exceeded" and "maximum context length is 512" in caught.value.message
    with pytest.raises(openai.BadRequestError) as caught:  # fits alone, but not with the answer it asks for
        client.completions.create(model=MODEL_NAME, prompt="x" * 500, max_tokens=20)
    assert "you requested 520 tokens (500 in the prompt, 20 for the completion)" in caught.value.message
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL_NAME, messages=[{"role": "user", "content": "y" * 520}])
    assert caught.value.code == "context_length_exceeded" and caught.value.param == "messages"
    still_serving(client)


def test_unknown_urls_and_methods_get_openai_errors(server, client):
    error = error_of(*post(server, "/v1/embeddings", {"model": MODEL_NAME, "input": "hi"}), 404)
    assert error["code"] == "unknown_url"
    error = error_of(*post(server, "/v1/completions", b"", method="GET"), 405)
    assert error["code"] == "method_not_allowed" and "allowed: POST" in error["message"]
    still_serving(client)


def _metric(server, name: str) -> float:
    with urllib.request.urlopen(f"{server.url}/metrics") as response:
        text = response.read().decode()
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


CANCELLED = 'lmplanes_requests_cancelled_total{endpoint="/v1/completions"}'


def _wait_for_metric(server, name: str, value: float) -> None:
    deadline = time.monotonic() + 30
    while _metric(server, name) != value:
        assert time.monotonic() < deadline, f"{name} stayed at {_metric(server, name)}, expected {value}"
        time.sleep(0.05)


def test_a_client_that_leaves_mid_stream_cancels_its_request(server, client):
    cancelled = _metric(server, CANCELLED)
    tokens = _metric(server, "lmplanes_completion_tokens_total")
    connection = http.client.HTTPConnection(server.host, int(server.port), timeout=60)
    body = {"model": MODEL_NAME, "prompt": "Tell me everything", "max_tokens": MAX_TOKENS_LIMIT, "temperature": 0,
            "stream": True}
    connection.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
    response = connection.getresponse()
    assert response.status == 200 and response.readline().startswith(b"data: {")  # the answer is under way
    assert _metric(server, "lmplanes_kv_cache_tokens") >= len("Tell me everything")  # its prompt is in the cache
    connection.sock.shutdown(socket.SHUT_RDWR)
    connection.close()
    _wait_for_metric(server, CANCELLED, cancelled + 1)
    # Decoding stopped with the request: far fewer tokens were made than it asked for, and its blocks are free.
    assert _metric(server, "lmplanes_completion_tokens_total") - tokens < MAX_TOKENS_LIMIT
    _wait_for_metric(server, "lmplanes_kv_cache_tokens", 0.0)
    still_serving(client)


def test_a_client_that_leaves_before_a_whole_answer_cancels_its_request(server, client):
    cancelled = _metric(server, CANCELLED)
    body = json.dumps({"model": MODEL_NAME, "prompt": "Tell me everything", "max_tokens": MAX_TOKENS_LIMIT}).encode()
    with socket.create_connection((server.host, int(server.port))) as sock:
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        time.sleep(0.2)  # the request has reached the backend
    _wait_for_metric(server, CANCELLED, cancelled + 1)
    still_serving(client)
