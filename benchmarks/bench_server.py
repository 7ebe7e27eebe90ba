"""Concurrent clients through the OpenAI-compatible server: continuous batching against one request at a time.

    python benchmarks/bench_server.py [--rounds 3] [--clients 16] [--new 64] [--write BENCHMARKS.md]

One llama-55m fp32 checkpoint (random weights, the byte tokenizer, so that no answer ends early) is served
twice, by two real ``lmplanes serve`` processes on 127.0.0.1: ``--max-batch CLIENTS`` (the continuous-batching
engine over a paged KV cache) and ``--max-batch 1`` (the serial backend: one request at a time). Each round,
``--clients`` threads post ``/v1/completions`` at once (greedy, ``max_tokens = --new``, prompts of different
lengths) to one server, then to the other; the order alternates between rounds, and only one server computes
at a time. Reported: total completion tokens/s (from the responses' ``usage``, over the wall time from the first
request sent to the last answer received), medians over rounds, the speed-up, and whether every answer of
the batching server equals the serial server's.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from bench_spine import cpu_name, write_section

import data
import model
import specs

START, END = "<!-- bench:server:start -->", "<!-- bench:server:end -->"
ROOT = Path(__file__).resolve().parents[1]
WORDS = "the quick brown fox jumps over a lazy dog while seven wizards quietly judge boxing matches".split()


class Server:
    """``lmplanes serve --port 0`` in a subprocess, ready once it prints its URL."""

    def __init__(self, checkpoint: Path, max_batch: int, log: Path) -> None:
        self.log = log.open("w")
        command = [sys.executable, "-m", "pack", "serve", "--checkpoint", str(checkpoint), "--port", "0",
                   "--model-name", "bench", "--max-batch", str(max_batch)]
        self.proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=self.log, text=True)
        assert self.proc.stdout is not None
        found = re.search(r"(http://\S+)/v1", self.proc.stdout.readline())
        if not found:
            self.stop()
            raise SystemExit(f"the server did not start; see {log}")
        threading.Thread(target=shutil.copyfileobj, args=(self.proc.stdout, self.log), daemon=True).start()
        self.url = found.group(1)

    def complete(self, prompt: str, new: int) -> tuple[str, int]:
        body = {"model": "bench", "prompt": prompt, "max_tokens": new, "temperature": 0}
        request = urllib.request.Request(f"{self.url}/v1/completions", json.dumps(body).encode(),
                                         {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=3600) as response:
            answer = json.load(response)
        return answer["choices"][0]["text"], answer["usage"]["completion_tokens"]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=120)
        self.log.close()


def write_checkpoint(folder: Path) -> Path:
    torch.manual_seed(0)
    lm = model.build(specs.load_preset("llama-55m")).eval()
    return model.save_checkpoint(lm, folder, extra=data.byte_tokenizer(eos_token=None).save)


def prompts(n: int) -> list[str]:
    return [" ".join(WORDS[(i + j) % len(WORDS)] for j in range(4 + 3 * i)) for i in range(n)]


def burst(server: Server, texts: list[str], new: int) -> tuple[float, list[str]]:
    """(completion tokens/s, the answers) for every prompt posted at once."""
    with ThreadPoolExecutor(len(texts)) as pool:
        start = time.perf_counter()
        answers = list(pool.map(lambda text: server.complete(text, new), texts))
        elapsed = time.perf_counter() - start
    return sum(tokens for _, tokens in answers) / elapsed, [text for text, _ in answers]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--new", type=int, default=64)
    parser.add_argument("--write", type=Path, default=None, help="replace the server section of this markdown file")
    args = parser.parse_args(argv)
    texts = prompts(args.clients)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = write_checkpoint(Path(tmp) / "llama-55m")
        servers = {
            "one at a time (--max-batch 1)": Server(checkpoint, 1, Path(tmp) / "serial.log"),
            f"continuous batching (--max-batch {args.clients})": Server(checkpoint, args.clients, Path(tmp) / "batch.log"),
        }
        try:
            for server in servers.values():  # warm-up: one short request each
                server.complete(texts[0], 2)
            rates: dict[str, list[float]] = {name: [] for name in servers}
            answers: dict[str, list[str]] = {}
            for r in range(args.rounds):
                names = list(servers)
                for name in names[r % 2 :] + names[: r % 2]:
                    rate, answers[name] = burst(servers[name], texts, args.new)
                    rates[name].append(rate)
                    print(f"round {r + 1}: {name}: {rate:.1f} tokens/s", flush=True)
        finally:
            for server in servers.values():
                server.stop()
    (serial, serial_rates), (batch, batch_rates) = rates.items()
    serial_rate, batch_rate = statistics.median(serial_rates), statistics.median(batch_rates)
    equal = sum(a == b for a, b in zip(answers[serial], answers[batch]))
    command = f"--rounds {args.rounds} --clients {args.clients} --new {args.new}"
    command += f" --write {args.write}" if args.write else ""
    section = "\n".join(
        [
            START,
            "## Serve: concurrent clients through the HTTP server, llama-55m fp32 (CPU)",
            "",
            f"Command: `python benchmarks/bench_server.py {command}`  ",
            f"Machine: {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, Python "
            f"{platform.python_version()}, {dt.date.today()}. {args.clients} clients post `/v1/completions` at once "
            f"(greedy, {args.new} tokens each, prompts of different lengths) to a real `lmplanes serve` process; "
            f"medians of {args.rounds} rounds, the two servers alternating.",
            "",
            "| server | total completion tokens/s | speed-up |",
            "| --- | --- | --- |",
            f"| {serial} | {serial_rate:.1f} | 1.00x |",
            f"| {batch} | {batch_rate:.1f} | {batch_rate / serial_rate:.2f}x |",
            "",
            f"Answers of the batching server equal to the serial server's: {equal} of {args.clients}.",
            END,
        ]
    )
    print(section)
    if args.write:
        write_section(args.write, section, START, END)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
