#!/usr/bin/env bash
# Builds the release binary and runs the pipeline benchmark; extra arguments go to pipeline.py
# (e.g. --outage stop --outage-s 60 --budget 32MiB --compression zstd). Not part of the test
# suite: figures, not assertions.
#
#   tests/bench/run.sh suite   runs every scenario of issue 9 in turn:
#     steady 50x100 @ 1 s (60 s); 60 s outage; 200 s outage (1M records held); outages of
#     OUTAGE_S seconds (default 600 = 10 min) with budgets of 8, 32 and 256 MiB (disk sampled every
#     second); the idle floor (1 device x 4 registers).
set -euo pipefail
cd "$(dirname "$0")/../.."
[[ -x tests/.venv/bin/python ]] || { echo "run tests/run.sh once first (it makes the venv)"; exit 1; }
cargo build --release --quiet
bench() { tests/.venv/bin/python tests/bench/pipeline.py "$@" || true; }
if [[ "${1:-}" == "suite" ]]; then
    shift
    outage_s="${OUTAGE_S:-600}"
    echo "== steady"; bench --duration 60 "$@"
    echo "== 60 s outage"; bench --outage stop --outage-s 60 "$@"
    echo "== 200 s outage"; bench --outage stop --outage-s 200 "$@"
    for budget in 8MiB 32MiB 256MiB; do
        echo "== ${outage_s} s outage, budget ${budget}"
        bench --outage stop --outage-s "$outage_s" --budget "$budget" "$@"
    done
    echo "== idle floor"; bench --devices 1 --registers 4 --duration 60 "$@"
    exit 0
fi
exec tests/.venv/bin/python tests/bench/pipeline.py "$@"
