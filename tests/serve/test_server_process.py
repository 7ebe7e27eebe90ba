"""``lmplanes serve`` as a process of its own: an API key, a stop signal that drains the requests in flight,
and mistakes on its command line."""

from __future__ import annotations

import signal
import socket
import threading
import urllib.error
import urllib.request

import openai
import pytest

from pack.cli import main
from tests.serving import MODEL_NAME, ServerProcess

KEY = "sk-test-0123456789"


@pytest.fixture(scope="module")
def keyed_server(tiny_checkpoint, tmp_path_factory):
    """A server whose key comes from the environment (so that it stays out of the process list); it decodes
    one request at a time (the serial backend), where the shared server batches."""
    process = ServerProcess(tiny_checkpoint, tmp_path_factory.mktemp("keyed") / "server.log", "--max-batch", "1",
                            env={"LMPLANES_API_KEY": KEY})
    yield process
    process.stop()


def _client(server: ServerProcess, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0, timeout=120)


def test_the_api_key_guards_v1_and_nothing_else(keyed_server):
    with pytest.raises(openai.AuthenticationError) as caught:
        _client(keyed_server, "sk-wrong").completions.create(model=MODEL_NAME, prompt="Hi", max_tokens=2)
    assert caught.value.status_code == 401 and caught.value.code == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError) as caught:
        _client(keyed_server, KEY[:-1]).models.list()  # a prefix of the key is no key
    assert caught.value.code == "invalid_api_key"
    request = urllib.request.Request(f"{keyed_server.url}/v1/models")  # no Authorization header at all
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request)
    assert refused.value.code == 401 and refused.value.headers["WWW-Authenticate"] == "Bearer"
    assert "didn't provide an API key" in refused.value.read().decode()
    got = _client(keyed_server, KEY).completions.create(model=MODEL_NAME, prompt="Hi", max_tokens=2, temperature=0)
    assert got.usage.completion_tokens == 2
    for open_path in ("/health", "/metrics"):  # probes and scrapers need no key
        with urllib.request.urlopen(f"{keyed_server.url}{open_path}") as response:
            assert response.status == 200
    assert KEY not in keyed_server.log_path.read_text()


def test_sigterm_lets_the_requests_in_flight_finish_then_exits_cleanly(keyed_server):
    client = _client(keyed_server, KEY)
    whole = client.completions.create(model=MODEL_NAME, prompt="Drain", max_tokens=200, temperature=0).choices[0].text
    stream = client.completions.create(model=MODEL_NAME, prompt="Drain", max_tokens=200, temperature=0, stream=True)
    chunks = iter(stream)
    pieces = [next(chunks).choices[0].text]  # the answer is under way
    streamed: list[str] = []
    reader = threading.Thread(target=lambda: streamed.extend(c.choices[0].text for c in chunks))
    reader.start()
    keyed_server.proc.send_signal(signal.SIGTERM)
    reader.join(timeout=120)
    assert "".join(pieces + streamed) == whole  # the request in flight was answered to its end
    assert keyed_server.stop() == 0
    log = keyed_server.log_path.read_text()
    assert "Waiting for connections to close" in log, log  # the stream was still running when the signal came
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((keyed_server.host, int(keyed_server.port)), timeout=5)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--api-key", ""], "the API key must not be empty"),
        (["--max-tokens", "0"], "max_tokens must be >= 1, got 0"),
        (["--shutdown-timeout", "-1"], "shutdown_timeout must be >= 0, got -1"),
        (["--max-batch", "0"], "--max-batch must be >= 1, got 0"),
        (["--max-len", "1"], "--max-len must be >= 2 (a prompt token and an answer token), got 1"),
    ],
)
def test_serve_settings_mistakes_are_one_line(tiny_checkpoint, args, message, capsys):
    assert main(["serve", "--checkpoint", str(tiny_checkpoint), "--port", "0", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"lmplanes: error: {message}") and err.endswith(" (see 'lmplanes serve --help')\n"), err


def test_a_port_in_use_is_one_line(tiny_checkpoint, capsys):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        assert main(["serve", "--checkpoint", str(tiny_checkpoint), "--port", str(port)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"lmplanes: error: cannot listen on 127.0.0.1:{port}: ") and err.count("\n") == 1, err
