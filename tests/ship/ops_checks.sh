#!/usr/bin/env bash
# Ops assets: Prometheus rules (promtool check + unit tests), Grafana dashboards (JSON schema,
# PromQL parsed by promtool), and the list of metric names they query:
#   target-ship/dashboard-metrics.txt, target-ship/alert-metrics.txt
# Compare those with a real scrape: tests/ship/dashboard_metrics_check.sh SCRAPE_FILE
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
need promtool prometheus
PY="$(ship_python)"

say "promtool check rules config/prometheus/alerts.yml"
promtool check rules config/prometheus/alerts.yml || die "alerts.yml does not pass promtool check rules"
say "promtool test rules config/prometheus/alerts.test.yml"
promtool test rules config/prometheus/alerts.test.yml || die "alert unit tests failed"

say "promtool check config config/prometheus/prometheus.example.yml"
(cd config/prometheus && promtool check config prometheus.example.yml) ||
  die "prometheus.example.yml is not a valid Prometheus config"

say "dashboards: committed JSON is what config/grafana/generate.py produces"
mkdir -p "$SHIP_OUT/grafana"
"$PY" config/grafana/generate.py "$SHIP_OUT/grafana" || die "config/grafana/generate.py"
for f in cabinet fleet; do
  diff -u "config/grafana/$f.json" "$SHIP_OUT/grafana/$f.json" >/dev/null ||
    die "config/grafana/$f.json differs from the generator's output: edit generate.py and run python3 config/grafana/generate.py config/grafana"
done

say "dashboards: schema"
"$PY" tests/ship/ops_metrics.py validate config/grafana/*.json || die "dashboard schema check"
say "dashboards: PromQL of every panel parsed by promtool"
"$PY" tests/ship/ops_metrics.py promql-rules "$SHIP_OUT/dashboard-exprs.rules.yml" config/grafana/*.json
promtool check rules "$SHIP_OUT/dashboard-exprs.rules.yml" ||
  die "a dashboard query is not valid PromQL (see $SHIP_OUT/dashboard-exprs.rules.yml)"

say "metric names queried"
"$PY" tests/ship/ops_metrics.py extract "$SHIP_OUT/dashboard-metrics.txt" config/grafana/*.json ||
  die "dashboard metric extraction"
"$PY" tests/ship/ops_metrics.py extract "$SHIP_OUT/alert-metrics.txt" config/prometheus/alerts.yml ||
  die "alert metric extraction"
say "ok"
