#!/usr/bin/env bash
# Every metric the dashboards and alerts query must be exported by cabinetd, and the live scrape
# passes `promtool check metrics`.
#
#   tests/ship/dashboard_metrics_check.sh SCRAPE_FILE [--strict]
#
# SCRAPE_FILE: a /metrics scrape of a running daemon (cross/smoke.sh leaves one in
# target-ship/smoke-TARGET/scrape.txt; or `curl -s 127.0.0.1:9108/metrics > scrape.txt`).
# A queried name that is absent from the scrape fails, unless it is registered in the sources
# (labelled families without series yet, e.g. uplink_reconnects_total before a reconnect) or
# listed in tests/ship/proposed-metrics.txt (asked of the daemon, not exported yet): those are
# warnings, or failures with --strict.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
SCRAPE="${1:?usage: tests/ship/dashboard_metrics_check.sh SCRAPE_FILE [--strict]}"
shift
[ -s "$SCRAPE" ] || die "$SCRAPE is missing or empty"
PY="$(ship_python)"
# The scrape itself is lint-clean (issue 14: a gauge named cabinetd_energy_wh_total was not):
# counters end in _total and nothing else does, help texts, units. tests/metrics_scrape.rs runs
# the same naming rules on every `cargo test`.
need promtool prometheus
say "promtool check metrics < $SCRAPE"
promtool check metrics <"$SCRAPE" || die "promtool check metrics: the scrape is not lint-clean (above)"
"$PY" tests/ship/ops_metrics.py extract "$SHIP_OUT/dashboard-metrics.txt" config/grafana/*.json >/dev/null
"$PY" tests/ship/ops_metrics.py extract "$SHIP_OUT/alert-metrics.txt" config/prometheus/alerts.yml >/dev/null
sort -u "$SHIP_OUT/dashboard-metrics.txt" "$SHIP_OUT/alert-metrics.txt" >"$SHIP_OUT/ops-metrics.txt"
say "comparing $(wc -l <"$SHIP_OUT/ops-metrics.txt") queried names with $SCRAPE"
"$PY" tests/ship/ops_metrics.py compare "$SCRAPE" "$SHIP_OUT/ops-metrics.txt" \
  tests/ship/proposed-metrics.txt src adapters "$@" ||
  die "the ops assets query metrics cabinetd does not export (list above)"
say "ok"
