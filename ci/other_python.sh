#!/usr/bin/env bash
# The device-side unit tests on a second CPython, in its own venv (.venv-VERSION):
#   ci/other_python.sh [VERSION]      (default 3.13; ./run test runs it after the main suite)
# Installs pyproject's dependencies + the agent and server extras and the test tools, pinned to
# the main venv's versions (ci/aarch64/requirements.py), then runs the protocol, agent, trainer,
# transport and server unit tests. The build-time extra (torch) is not installed -- the CPU torch
# wheel on this machine's disk is for CPython 3.11 only -- so tests that export a model are left
# out (IGNORE).
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=${1:-3.13}
MAIN_PY=${PYTHON:-.venv/bin/python}
VENV=.venv-$VERSION
TESTS="tests/unit/protocol tests/unit/agent tests/unit/trainer tests/unit/transport tests/unit/server"
# test_batching compares with scikit-learn (not a device dependency); test_evaluation exports a
# model with torch; test_probe_poisoning and test_probe_fresh_poisoning train on scikit-learn's
# digits.
IGNORE="--ignore=tests/unit/trainer/test_batching.py --ignore=tests/unit/server/test_evaluation.py"
IGNORE="$IGNORE --ignore=tests/unit/server/test_probe_poisoning.py"
IGNORE="$IGNORE --ignore=tests/unit/server/test_probe_fresh_poisoning.py"

die() { echo "other_python: error: $*" >&2; exit 1; }

find_interpreter() {  # pyenv's build first: its shim on PATH may exist without the version active
  local candidate
  for candidate in "$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")/versions/$VERSION"*/bin/"python$VERSION" \
    "python$VERSION"; do
    if "$candidate" -c 'import sys' >/dev/null 2>&1; then command -v "$candidate"; return 0; fi
  done
  die "CPython $VERSION not found (looked under pyenv and on PATH); install it or pass another VERSION"
}

reqs=$("$MAIN_PY" ci/aarch64/requirements.py --extra agent --extra server)
stamp=$VENV/.fleetlearn-requirements
if [ ! -x "$VENV/bin/python" ] || [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$reqs" ] \
  || [ pyproject.toml -nt "$stamp" ]; then
  echo "other_python: building $VENV ($(find_interpreter)) ..." >&2
  rm -rf "$VENV"
  "$(find_interpreter)" -m venv "$VENV" || die "could not create $VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check $reqs \
    || die "pip could not install the device dependencies on CPython $VERSION (a missing wheel?)"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps -e . \
    || die "pip install -e . failed on CPython $VERSION (requires-python in pyproject.toml?)"
  echo "$reqs" >"$stamp"
fi
echo "other_python: $("$VENV/bin/python" -V) on $TESTS" >&2
# shellcheck disable=SC2086  # word lists
exec "$VENV/bin/python" -m pytest -q -p no:cacheprovider $TESTS $IGNORE
