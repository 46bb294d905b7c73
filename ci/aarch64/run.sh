#!/usr/bin/env bash
# The emulated aarch64 CI job (./run test runs it after the x86_64 suite; ./run aarch64 alone).
# On an x86_64 Debian 12 host: builds/reuses the arm64 sysroot and aarch64 wheels (setup.sh,
# cached in .cache/aarch64), then under qemu-aarch64-static:
#   1. every device module imports, and none even tries to import torch (check_imports.py)
#   2. the protocol, agent, trainer and transport unit tests (two shards in parallel, one as a
#      Pi 4's Cortex-A72, one as a Pi 5's Cortex-A76)
#   3. the exported training step trains on aarch64 (both CPU models) and matches x86_64
#      (step_parity.py)
# Usage: ci/aarch64/run.sh [--json OUT]  (default OUT: .cache/aarch64/last-run.json)  PYTHON: the host venv's interpreter (torch installed)
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-.venv/bin/python}
CACHE=${FLEETLEARN_AARCH64_CACHE:-$PWD/.cache/aarch64}
export FLEETLEARN_AARCH64_CACHE=$CACHE
JSON=$CACHE/last-run.json  # the measurements (benchmarks/results/aarch64_emulation.json is one)
[ "${1:-}" = --json ] && JSON=${2:?usage: ci/aarch64/run.sh [--json OUT]}
# Unit tests run under emulation, in two shards of about equal time (one per core). Left out:
# tests/unit/trainer/test_batching.py (compares with scikit-learn, not a device dependency).
FEEDBACK=tests/unit/protocol/test_error_feedback.py
SHARD_A="tests/unit/protocol --ignore=$FEEDBACK"
SHARD_B="tests/unit/agent tests/unit/trainer tests/unit/transport $FEEDBACK --ignore=tests/unit/trainer/test_batching.py"

say() { echo "aarch64: $*" >&2; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

mkdir -p "$CACHE"
t0=$(now)
"$PYTHON" ci/aarch64/requirements.py >"$CACHE/requirements.new"
PYTHON=$PYTHON ci/aarch64/setup.sh "$CACHE/requirements.new"
setup_s=$(since "$t0")
say "setup done in ${setup_s} s"

t1=$(now)
ci/aarch64/python ci/aarch64/check_imports.py
imports_s=$(since "$t1")

t2=$(now)
pytest_emulated() {  # CPU SHARD LOG: -p emulated_pytest lifts Hypothesis's deadline (emulation is slow)
  # shellcheck disable=SC2086  # the shard is a list of words
  QEMU_CPU=$1 PYTHONPATH=ci/aarch64 ci/aarch64/python -m pytest -p emulated_pytest \
    -p no:cacheprovider -q $2 >"$3" 2>&1
}
# One shard per Raspberry Pi core: numpy and ORT pick kernels by the CPU's features (the Pi 4's
# Cortex-A72 lacks the dot-product and fp16 arithmetic of the Pi 5's Cortex-A76).
pytest_emulated cortex-a72 "$SHARD_A" "$CACHE/shard-a.log" & pid_a=$!
pytest_emulated cortex-a76 "$SHARD_B" "$CACHE/shard-b.log" & pid_b=$!
rc_a=0; wait "$pid_a" || rc_a=$?
rc_b=0; wait "$pid_b" || rc_b=$?
tests_s=$(since "$t2")
for log in "$CACHE/shard-a.log" "$CACHE/shard-b.log"; do
  if [ "$rc_a" != 0 ] || [ "$rc_b" != 0 ]; then cat "$log" >&2; else tail -n 1 "$log" >&2; fi
done
[ "$rc_a" = 0 ] && [ "$rc_b" = 0 ] || { say "FAIL: unit tests under emulation"; exit 1; }
summary_line() { tail -n 1 "$1" | sed -E 's/^=+ //; s/ =+$//'; }

t3=$(now)
rm -rf "$CACHE/parity"
"$PYTHON" ci/aarch64/step_parity.py "$CACHE/parity" --json "$CACHE/parity.json"
parity_s=$(since "$t3")

total_s=$(since "$t0")
say "done in ${total_s} s (setup ${setup_s}, imports ${imports_s}, unit tests ${tests_s}, step parity ${parity_s})"
"$PYTHON" - "$JSON" "$CACHE/parity.json" <<PY
import json, os, sys
parity = json.load(open(sys.argv[2]))
json.dump({
    "host": {"cpus": os.cpu_count(), "loadavg_1m_at_end": os.getloadavg()[0]},  # shared machine?
    "job_wall_s": $total_s, "setup_s": $setup_s, "imports_s": $imports_s,
    "unit_tests_s": $tests_s, "step_parity_s": $parity_s,
    "unit_tests": {"cortex-a72": "$SHARD_A: $(summary_line "$CACHE/shard-a.log")",
                   "cortex-a76": "$SHARD_B: $(summary_line "$CACHE/shard-b.log")"},
    "step_parity": parity,
}, open(sys.argv[1], "w"), indent=2)
PY
say "measurements in $JSON"
