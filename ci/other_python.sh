#!/usr/bin/env bash
# The device-side unit tests on a second CPython, in its own venv (.venv-VERSION):
#   ci/other_python.sh [VERSION]      (default 3.13; ./run test runs it after the main suite)
# Installs what a device installs (pyproject's dependencies + the agent extra) and the test
# tools, pinned to the main venv's versions (ci/aarch64/requirements.py), then runs the
# protocol, agent, trainer and transport unit tests. The build-time extras (torch) are not
# installed: the CPU torch wheel on this machine's disk is for CPython 3.11 only.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=${1:-3.13}
MAIN_PY=${PYTHON:-.venv/bin/python}
VENV=.venv-$VERSION
TESTS="tests/unit/protocol tests/unit/agent tests/unit/trainer tests/unit/transport"
IGNORE="--ignore=tests/unit/trainer/test_batching.py"  # compares with scikit-learn (not a device dep)

die() { echo "other_python: error: $*" >&2; exit 1; }

find_interpreter() {
  local candidate
  for candidate in "python$VERSION" "$(pyenv root 2>/dev/null)/versions/$VERSION"*/bin/"python$VERSION" \
    "$HOME/.pyenv/versions/$VERSION"*/bin/"python$VERSION"; do
    if command -v "$candidate" >/dev/null 2>&1; then command -v "$candidate"; return 0; fi
  done
  die "CPython $VERSION not found (looked on PATH and under pyenv); install it or pass another VERSION"
}

reqs=$("$MAIN_PY" ci/aarch64/requirements.py)
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
