#!/usr/bin/env bash
# Builds the release binary and runs the signed point.write round-trip benchmark (issue 12);
# extra arguments go to signed_write.py (e.g. --n 1000, --bin target/debug/cabinetd).
# Not part of the test suite: figures, not assertions.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${CABINETD_TEST_PYTHON:-tests/.venv/bin/python}"
[[ -x "$PY" ]] || { echo "run tests/run.sh once first (it makes the venv), or set CABINETD_TEST_PYTHON"; exit 1; }
cargo build --release --quiet
exec "$PY" tests/bench/signed_write.py "$@"
