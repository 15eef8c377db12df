#!/usr/bin/env bash
# Builds the release binary and runs the pipeline benchmark; extra arguments go to pipeline.py
# (e.g. --outage stop --outage-s 60). Not part of the test suite: figures, not assertions.
set -euo pipefail
cd "$(dirname "$0")/../.."
[[ -x tests/.venv/bin/python ]] || { echo "run tests/run.sh once first (it makes the venv)"; exit 1; }
cargo build --release --quiet
exec tests/.venv/bin/python tests/bench/pipeline.py "$@"
