"""A llama.cpp decoder in its own process, driven by ``bench_decode.py`` one JSON line at a time.

llama.cpp runs beside torch only at a cost: in one process with torch imported its OpenMP threads decode at a
small fraction of their speed (measured here: 3 against 76 tokens/s for SmolLM2-135M), so it gets a process of
its own, which imports nothing of torch, and waits passively between requests (``bench_decode.py`` sets
``OMP_WAIT_POLICY``). Each request line ``{"prompt": [ids], "new": n}`` is answered with
``{"first": seconds to the first token, "rate": tokens/s after it, "tokens": [ids]}``, greedy.

    python benchmarks/llamacpp_worker.py MODEL.gguf THREADS CONTEXT
"""

from __future__ import annotations

import json
import sys
import time

from llama_cpp import Llama


def main() -> int:
    path, threads, context = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    llm = Llama(model_path=path, n_ctx=context, n_threads=threads, n_batch=context, verbose=False)
    for line in sys.stdin:
        request = json.loads(line)
        llm.reset()  # forget the previous run's tokens, so that the prompt is evaluated again
        start = time.perf_counter()
        steps = llm.generate(request["prompt"], top_k=1, temp=0.0, reset=True)
        tokens = [next(steps)]
        first = time.perf_counter()
        tokens.extend(next(steps) for _ in range(request["new"] - 1))
        end = time.perf_counter()
        reply = {"first": first - start, "rate": (len(tokens) - 1) / (end - first), "tokens": tokens}
        print(json.dumps(reply), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
