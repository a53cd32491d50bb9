#!/usr/bin/env bash
# Lecture 09's GPU check in one command, for a machine with a CUDA GPU:
#
#     bash benchmarks/gpu_check.sh OUT_DIR        (or: make gpu-check OUT=OUT_DIR)
#
# runs the gpu-marked tests of the Triton kernel, benchmarks/flash_gpu.py and the GPU
# rows of benchmarks/alternatives.py (lecture 10), and writes everything into OUT_DIR:
# environment.txt (GPU, versions, attn-course doctor), gpu_tests.log and gpu_tests.xml,
# benchmark.log, flash_gpu.csv, flash_gpu_summary.csv, flash_gpu_<dtype>.png,
# alternatives.log, alternatives_cuda.csv, alternatives_crossovers_cuda.csv,
# alternatives_cuda.png and summary.txt. Run it from the repository root. It uses the
# machine's own Python, torch and triton (PYTHON=python3 unless set) and installs
# nothing; the package is found through PYTHONPATH. Each step has a time limit so the
# whole check ends in under 8 minutes on one H100; the benchmark writes its rows as it
# goes and stops measuring at its time budget, so a slow machine still gets a partial
# table. The exit status is non-zero when a step failed.
set -u
OUT=${1:?usage: bash benchmarks/gpu_check.sh OUT_DIR}
PY=${PYTHON:-python3}
TEST_LIMIT=${TEST_LIMIT:-150}     # seconds for the gpu tests
BENCH_BUDGET=${BENCH_BUDGET:-210} # seconds of measuring; the benchmark then writes its files
ALT_LIMIT=${ALT_LIMIT:-75}        # seconds for the efficient-attention benchmark
mkdir -p "$OUT"
export PYTHONPATH="$(pwd)${PYTHONPATH:+:$PYTHONPATH}"
start=$(date +%s)

{
    echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 || true
    "$PY" - <<'PYEOF'
import importlib
for name in ("torch", "triton", "numpy", "pytest", "matplotlib"):
    try:
        print(f"{name}: {importlib.import_module(name).__version__}")
    except ImportError:
        print(f"{name}: not installed")
import torch
print("cuda available:", torch.cuda.is_available(),
      torch.cuda.get_device_name() if torch.cuda.is_available() else "")
PYEOF
    "$PY" -m attn_course.cli doctor
} > "$OUT/environment.txt" 2>&1
cat "$OUT/environment.txt"

if "$PY" -c "import pytest" 2>/dev/null; then
    timeout "$TEST_LIMIT" "$PY" -m pytest -p no:cacheprovider -m gpu tests/test_flash_triton.py \
        -q -rA --junitxml="$OUT/gpu_tests.xml" 2>&1 | tee "$OUT/gpu_tests.log"
    tests_rc=${PIPESTATUS[0]}
else
    echo "pytest is not installed on this machine: the gpu tests were not run" \
        | tee "$OUT/gpu_tests.log"
    tests_rc=1
fi

timeout $((BENCH_BUDGET + 45)) "$PY" benchmarks/flash_gpu.py --out "$OUT" \
    --budget-s "$BENCH_BUDGET" 2>&1 | tee "$OUT/benchmark.log"
bench_rc=${PIPESTATUS[0]}

timeout "$ALT_LIMIT" "$PY" benchmarks/alternatives.py --device cuda --no-errors \
    --lengths 1024 2048 4096 8192 16384 --out "$OUT" 2>&1 | tee "$OUT/alternatives.log"
alt_rc=${PIPESTATUS[0]}

{
    echo "gpu tests exit status: $tests_rc (124 = time limit)"
    echo "benchmark exit status: $bench_rc (124 = time limit)"
    echo "alternatives exit status: $alt_rc (124 = time limit)"
    echo "elapsed: $(( $(date +%s) - start )) s"
} | tee "$OUT/summary.txt"
[ "$tests_rc" -eq 0 ] && [ "$bench_rc" -eq 0 ] && [ "$alt_rc" -eq 0 ]
