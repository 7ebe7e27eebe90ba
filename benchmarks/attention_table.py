"""The BENCHMARKS.md table of ``triton_flash`` against ``sdpa`` from one ``nox -s perf`` result file.

    python benchmarks/attention_table.py benchmarks/out/attention-cuda.json

One row per (mode, T, head dim, causal) at GQA ratio 1: achieved TFLOP/s per kernel and the ratio of
``triton_flash`` to the reference (``sdpa-flash`` where it ran, else ``sdpa``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def table(path: Path) -> str:
    data = json.loads(path.read_text())
    rows = [r for r in data["results"] if r["gqa"] == 1 and r["mode"] != "decode"]
    kernels = sorted({r["kernel"] for r in rows})
    reference = "sdpa-flash" if "sdpa-flash" in kernels else "sdpa"
    tflops = {(r["mode"], r["T"], r["D"], r["causal"], r["kernel"]): r["tflops"] for r in rows}
    lines = [
        f"Machine: {data['machine']}, torch {data['torch']}, {rows[0]['dtype'] if rows else '?'}; TFLOP/s "
        f"(4*B*H*T*T*D forward, halved when causal, x2.5 with the backward).",
        "",
        f"| mode | T | D | causal | {' | '.join(kernels)} | triton_flash / {reference} |",
        "| --- | --- | --- | --- |" + " --- |" * (len(kernels) + 1),
    ]
    for mode, t, d, causal in sorted({k[:4] for k in tflops}):
        cells = [tflops.get((mode, t, d, causal, k)) for k in kernels]
        mine, ref = tflops.get((mode, t, d, causal, "triton_flash")), tflops.get((mode, t, d, causal, reference))
        ratio = f"{mine / ref:.2f}" if mine and ref else "-"
        shown = " | ".join(f"{c:.3g}" if c is not None else "-" for c in cells)
        lines.append(f"| {mode} | {t} | {d} | {'yes' if causal else 'no'} | {shown} | {ratio} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(Path(sys.argv[1])))
