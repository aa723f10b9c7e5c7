#!/usr/bin/env bash
# CI's spine stage (docs/architecture.md): Norma built on its reference kernels
# alone (-DNORMA_FAST_KERNELS=OFF: layers/fast/ is not compiled), then the whole
# test suite there; the tests that compare fast and reference kernels say they
# were skipped. Also the one-way include rule (scripts/deps.sh --check).
#   scripts/ci-spine.sh [BUILD_DIR]   (default: build-spine in the repository)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
dir=${1:-build-spine}
jobs=${JOBS:-2}
scripts/deps.sh --check
start=$SECONDS
cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=Release -DNORMA_FAST_KERNELS=OFF -DNORMA_BUILD_BENCH=OFF
cmake --build "$dir" -j"$jobs"
echo "ci-spine.sh: configured and built in $((SECONDS - start)) s"
ctest --test-dir "$dir" --output-on-failure -j"$jobs"
echo "ci-spine.sh: done in $((SECONDS - start)) s"
