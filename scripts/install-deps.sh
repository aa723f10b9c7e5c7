#!/usr/bin/env bash
# Installs the Debian 12 packages Norma builds, tests and runs with.
# Idempotent and quiet: when everything is already installed it prints nothing.
#   scripts/install-deps.sh         build + test + run (what the README commands need)
#   scripts/install-deps.sh --dev   also python3-torch and python3-numpy, for
#                                   scripts/gen_fixtures.py (regenerating test fixtures)
#   scripts/install-deps.sh --sanitizers  also clang 14 and its runtimes, for scripts/ci-sanitizers.sh
# Runs apt-get as root, or through sudo when not root.
set -euo pipefail

packages=(build-essential cmake g++ libopenblas-dev libfmt-dev catch2 libcli11-dev
          nlohmann-json3-dev libopenmpi-dev openmpi-bin gnuplot-nox)
for arg in "$@"; do
  case "$arg" in
    --dev) packages+=(python3-torch python3-numpy) ;;
    # The sanitizer and fuzz builds (scripts/ci-sanitizers.sh): clang, its sanitizer and
    # libFuzzer runtimes, LLVM's OpenMP (clang's -fopenmp), llvm-symbolizer for reports.
    --sanitizers) packages+=(clang-14 libclang-rt-14-dev libomp-14-dev llvm-14) ;;
    -h|--help) sed -n '2,8s/^# \{0,1\}//p' "$0"; exit 0 ;;
    *) echo "install-deps.sh: unknown option '$arg' (expected --dev or --sanitizers)" >&2; exit 2 ;;
  esac
done

missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$p")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

sudo=()
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || { echo "install-deps.sh: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  sudo=(sudo)
fi
echo "install-deps.sh: installing ${missing[*]}"
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
