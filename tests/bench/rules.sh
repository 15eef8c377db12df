#!/usr/bin/env bash
# Builds the release binary and runs the rules benchmark (tests/bench/rules.py); extra arguments
# go to it (e.g. --duration 30 --rules 1000). Not part of the test suite: figures, not assertions.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${CABINETD_TEST_PYTHON:-tests/.venv/bin/python}
[[ -x $PY ]] || { echo "run tests/run.sh once first (it makes the venv), or set CABINETD_TEST_PYTHON"; exit 1; }
cargo build --release --quiet
exec "$PY" tests/bench/rules.py "$@"
