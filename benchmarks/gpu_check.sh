#!/usr/bin/env bash
# The one prepared GPU session of the triton_flash issue: the kernel tests on CUDA (compiled, no interpreter),
# then the bf16 microbenchmarks of triton_flash, sdpa and sdpa held to its flash back-end at T=1k/4k/8k,
# D=64/128, causal and not, then the table for BENCHMARKS.md. Run from anywhere: benchmarks/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
unset TRITON_INTERPRET
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python -m pytest -q -p no:cacheprovider tests/kernel/test_triton_flash.py tests/kernel/test_registry.py \
    tests/kernel/test_autocast.py
LMPLANES_PERF_DTYPE=bfloat16 python -m pytest benchmarks/test_bench_attention.py --benchmark-only \
    -p no:cacheprovider --import-mode=importlib -q --benchmark-columns=median \
    -k "(T1024- or T4096- or T8192-) and gqa1 and (sdpa or triton_flash)"
python benchmarks/attention_table.py benchmarks/out/attention-cuda.json
