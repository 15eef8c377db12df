"""Generates config/grafana/cabinet.json and fleet.json (dashboards as code).

    python3 config/grafana/generate.py config/grafana

Edit this file, not the JSON: tests/ship/ops_checks.sh fails when the committed JSON differs from
what this script generates. Queries use only cabinetd's metric names (SPEC §4 plus the ones listed
in config/prometheus/alerts.yml's header), `up` and `process_start_time_seconds`; cabinets are
told apart by `instance` (see config/prometheus/prometheus.example.yml).
"""
import json, sys

DS = {"type": "prometheus", "uid": "${datasource}"}

class Dash:
    def __init__(self):
        self.panels = []
        self.id = 0
        self.y = 0
        self.x = 0
        self.rowh = 0

    def row(self, title):
        self.newline()
        self.id += 1
        self.panels.append({"id": self.id, "type": "row", "title": title, "collapsed": False,
                            "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y}, "panels": []})
        self.y += 1

    def newline(self):
        if self.x:
            self.y += self.rowh
            self.x = 0
            self.rowh = 0

    def panel(self, ptype, title, targets, w=8, h=8, unit=None, desc=None, extra=None, mappings=None,
              thresholds=None, minv=None, maxv=None):
        if self.x + w > 24:
            self.newline()
        self.id += 1
        tg = []
        for i, t in enumerate(targets):
            if isinstance(t, str):
                t = {"expr": t}
            d = {"refId": chr(65 + i), "datasource": DS, "expr": t["expr"],
                 "legendFormat": t.get("legend", "__auto")}
            if t.get("instant"):
                d["instant"] = True
                d["range"] = False
                d["format"] = "table"
            tg.append(d)
        defaults = {}
        if unit:
            defaults["unit"] = unit
        if mappings:
            defaults["mappings"] = mappings
        if thresholds:
            defaults["thresholds"] = {"mode": "absolute", "steps": thresholds}
        if minv is not None:
            defaults["min"] = minv
        if maxv is not None:
            defaults["max"] = maxv
        p = {"id": self.id, "type": ptype, "title": title, "datasource": DS, "targets": tg,
             "gridPos": {"h": h, "w": w, "x": self.x, "y": self.y},
             "fieldConfig": {"defaults": defaults, "overrides": []}, "options": {}}
        if desc:
            p["description"] = desc
        if extra:
            p.update(extra)
        self.panels.append(p)
        self.x += w
        self.rowh = max(self.rowh, h)

UPDOWN = [{"type": "value", "options": {"0": {"text": "down", "color": "red", "index": 0},
                                        "1": {"text": "up", "color": "green", "index": 1}}}]
RED0 = [{"color": "green", "value": None}, {"color": "red", "value": 1}]
GREEN1 = [{"color": "red", "value": None}, {"color": "green", "value": 1}]
FILL = [{"color": "green", "value": None}, {"color": "orange", "value": 0.8}, {"color": "red", "value": 0.95}]

def dashboard(uid, title, desc, templating, panels):
    return {
        "uid": uid, "title": title, "description": desc, "tags": ["cabinetd"],
        "schemaVersion": 39, "version": 1, "editable": True, "graphTooltip": 1,
        "time": {"from": "now-24h", "to": "now"}, "refresh": "1m", "timezone": "browser",
        "annotations": {"list": []},
        "templating": {"list": templating}, "panels": panels,
    }

DSVAR = {"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus",
         "current": {}, "hide": 0}
JOBVAR = {"name": "job", "label": "Job", "type": "custom", "query": "cabinetd",
          "current": {"text": "cabinetd", "value": "cabinetd"}, "hide": 0,
          "options": [{"text": "cabinetd", "value": "cabinetd", "selected": True}]}
INSTVAR = {"name": "instance", "label": "Cabinet", "type": "query", "datasource": DS,
           "definition": 'label_values(cabinetd_build_info{job="$job"}, instance)',
           "query": {"query": 'label_values(cabinetd_build_info{job="$job"}, instance)',
                     "refId": "PrometheusVariableQueryEditor-VariableQuery"},
           "refresh": 2, "sort": 1, "current": {}, "hide": 0}

# ---------------------------------------------------------------- one cabinet
S = '{job="$job", instance="$instance"}'
d = Dash()
d.row("Uplink")
d.panel("stat", "Uplink", [f"cabinetd_uplink_connected{S}"], w=4, h=4, mappings=UPDOWN, thresholds=GREEN1)
d.panel("stat", "Mode", [{"expr": f"cabinetd_mode{S} == 1", "legend": "{{mode}}"}], w=4, h=4,
        extra={"options": {"textMode": "name", "colorMode": "none", "reduceOptions": {"calcs": ["lastNotNull"]}}})
d.panel("stat", "Version", [{"expr": f"cabinetd_build_info{S}", "legend": "{{version}}"}], w=4, h=4,
        extra={"options": {"textMode": "name", "colorMode": "none", "reduceOptions": {"calcs": ["lastNotNull"]}}})
d.panel("stat", "Uptime", [f"time() - process_start_time_seconds{S}"], w=4, h=4, unit="s")
d.panel("stat", "Clock offset vs Prometheus", [f"cabinetd_time_seconds{S} - timestamp(cabinetd_time_seconds{S})"],
        w=4, h=4, unit="s", desc="Cabinet wall clock minus the Prometheus server's clock at scrape time.",
        thresholds=[{"color": "green", "value": None}, {"color": "red", "value": 30}])
d.panel("stat", "Restarts (24h)", [f"changes(process_start_time_seconds{S}[24h])"], w=4, h=4, thresholds=RED0)
d.panel("timeseries", "Uplink connected / reconnects", [
    {"expr": f"cabinetd_uplink_connected{S}", "legend": "connected"},
    {"expr": f"increase(cabinetd_uplink_reconnects_total{S}[$__rate_interval])", "legend": "reconnects {{broker}}"}],
    w=24, h=6)
d.row("Outbox")
d.panel("timeseries", "Outbox depth by stream", [{"expr": f"cabinetd_outbox_records{S}", "legend": "{{stream}}"}],
        unit="short")
d.panel("timeseries", "Outbox size vs budget", [
    {"expr": f"cabinetd_outbox_bytes{S}", "legend": "on disk"},
    {"expr": f"cabinetd_outbox_budget_bytes{S}", "legend": "budget"}], unit="bytes")
d.panel("gauge", "Outbox fill", [f"cabinetd_outbox_bytes{S} / cabinetd_outbox_budget_bytes{S}"],
        unit="percentunit", minv=0, maxv=1, thresholds=FILL)
d.panel("timeseries", "Oldest record age", [{"expr": f"cabinetd_outbox_oldest_record_age_seconds{S}", "legend": "age"}],
        unit="s")
d.panel("timeseries", "Published / evicted records per second", [
    {"expr": f"rate(cabinetd_published_records_total{S}[$__rate_interval])", "legend": "published {{stream}}"},
    {"expr": f"rate(cabinetd_evicted_records_total{S}[$__rate_interval])", "legend": "evicted {{stream}}"}],
    unit="reqps")
d.panel("stat", "Store recoveries (24h)", [f"sum(increase(cabinetd_store_recoveries_total{S}[24h]))"],
        thresholds=RED0, desc="Corrupt stores moved aside at start (data of the old store is lost).")
d.row("Devices")
d.panel("state-timeline", "Device health", [{"expr": f"cabinetd_device_up{S}", "legend": "{{device}} ({{protocol}})"}],
        w=12, mappings=UPDOWN, thresholds=GREEN1)
d.panel("timeseries", "Poll duration p95", [{"expr":
    f"histogram_quantile(0.95, sum by (device, le) (rate(cabinetd_poll_duration_seconds_bucket{S}[$__rate_interval])))",
    "legend": "{{device}}"}], w=12, unit="s")
d.panel("timeseries", "Poll errors per second", [{"expr": f"rate(cabinetd_poll_errors_total{S}[$__rate_interval])",
        "legend": "{{device}}"}], w=12, unit="reqps")
d.panel("timeseries", "Commands", [{"expr":
    f"sum by (action, status) (increase(cabinetd_commands_total{S}[$__rate_interval]))",
    "legend": "{{action}} {{status}}"}], w=12, unit="short")
d.row("Lighting and energy")
d.panel("timeseries", "DALI lamp failures by bus", [{"expr": f"cabinetd_dali_lamp_failures{S}", "legend": "{{bus}}"}],
        unit="short", thresholds=RED0)
d.panel("barchart", "Energy per day", [
    {"expr": f"sum(increase(cabinetd_energy_kwh_total{S}[1d]))", "legend": "consumed"},
    {"expr": f"sum(increase(cabinetd_energy_baseline_kwh_total{S}[1d]))", "legend": "baseline (full power dusk→dawn)"}],
    unit="kwatth", extra={"interval": "1d"})
d.panel("stat", "Savings (last 7 days)", [
    f"1 - sum(increase(cabinetd_energy_kwh_total{S}[7d])) / sum(increase(cabinetd_energy_baseline_kwh_total{S}[7d]))"],
    unit="percentunit")
cab = dashboard("cabinetd-cabinet", "cabinetd — cabinet",
                "One street cabinet: uplink, outbox, devices, DALI lamps, energy (cabinetd metrics).",
                [DSVAR, JOBVAR, INSTVAR], d.panels)

# ---------------------------------------------------------------- fleet
J = '{job="$job"}'
f = Dash()
f.row("Fleet health")
f.panel("stat", "Cabinets answering", [f"sum(up{J})"], w=4, h=4, thresholds=GREEN1)
f.panel("stat", "Cabinets not answering", [f"count(up{J} == 0) or vector(0)"], w=4, h=4, thresholds=RED0)
f.panel("stat", "Uplinks down", [f"count(cabinetd_uplink_connected{J} == 0) or vector(0)"], w=4, h=4, thresholds=RED0)
f.panel("stat", "Devices down", [f"count(cabinetd_device_up{J} == 0) or vector(0)"], w=4, h=4, thresholds=RED0)
f.panel("stat", "Lamp failures", [f"sum(cabinetd_dali_lamp_failures{J}) or vector(0)"], w=4, h=4, thresholds=RED0)
f.panel("stat", "Restarts (24h)", [f"sum(changes(process_start_time_seconds{J}[24h]))"], w=4, h=4, thresholds=RED0)
f.panel("table", "Cabinets", [
    {"expr": f"cabinetd_uplink_connected{J}", "instant": True},
    {"expr": f"cabinetd_outbox_bytes{J} / cabinetd_outbox_budget_bytes{J}", "instant": True},
    {"expr": f"cabinetd_outbox_oldest_record_age_seconds{J}", "instant": True},
    {"expr": f"count by (job, instance) (cabinetd_device_up{J} == 0)", "instant": True},
    {"expr": f"sum by (job, instance) (cabinetd_dali_lamp_failures{J})", "instant": True},
    {"expr": f"max by (job, instance, version) (cabinetd_build_info{J})", "instant": True}],
    w=24, h=9, desc="Uplink (1 = up), outbox fill, oldest record age, devices down, lamp failures, version.",
    extra={"transformations": [
        {"id": "merge", "options": {}},
        {"id": "organize", "options": {
            "excludeByName": {"Time": True, "job": True},
            "renameByName": {"instance": "Cabinet", "version": "Version", "Value #A": "Uplink up",
                             "Value #B": "Outbox fill", "Value #C": "Oldest record (s)",
                             "Value #D": "Devices down", "Value #E": "Lamp failures",
                             "Value #F": "Build"}}}]})
f.row("Uplink and outbox")
f.panel("timeseries", "Uplink connected (share of cabinets)",
        [{"expr": f"avg(cabinetd_uplink_connected{J})", "legend": "connected"},
         {"expr": f"avg(cabinetd_mode{{job=\"$job\", mode=\"autonomous\"}})", "legend": "autonomous"}],
        unit="percentunit", minv=0, maxv=1)
f.panel("timeseries", "Outbox fill, top 10", [{"expr":
    f"topk(10, cabinetd_outbox_bytes{J} / cabinetd_outbox_budget_bytes{J})", "legend": "{{instance}}"}],
    unit="percentunit", thresholds=FILL)
f.panel("timeseries", "Oldest record age, top 10", [{"expr":
    f"topk(10, cabinetd_outbox_oldest_record_age_seconds{J})", "legend": "{{instance}}"}], unit="s")
f.panel("timeseries", "Outbox records by stream (fleet)", [{"expr":
    f"sum by (stream) (cabinetd_outbox_records{J})", "legend": "{{stream}}"}], unit="short")
f.panel("timeseries", "Published records per second (fleet)", [{"expr":
    f"sum by (stream) (rate(cabinetd_published_records_total{J}[$__rate_interval]))", "legend": "{{stream}}"}],
    unit="reqps")
f.panel("timeseries", "Evicted records (1h) by cabinet", [{"expr":
    f"sum by (instance) (increase(cabinetd_evicted_records_total{J}[1h])) > 0", "legend": "{{instance}}"}],
    unit="short")
f.panel("timeseries", "Uplink reconnects (1h), top 10", [{"expr":
    f"topk(10, sum by (instance) (increase(cabinetd_uplink_reconnects_total{J}[1h])))", "legend": "{{instance}}"}],
    unit="short")
f.panel("timeseries", "Store recoveries (24h)", [{"expr":
    f"sum by (instance) (increase(cabinetd_store_recoveries_total{J}[24h])) > 0", "legend": "{{instance}}"}],
    unit="short")
f.panel("timeseries", "Restarts (1h) by cabinet", [{"expr":
    f"changes(process_start_time_seconds{J}[1h]) > 0", "legend": "{{instance}}"}], unit="short")
f.row("Devices and lighting")
f.panel("bargauge", "Devices down by cabinet", [{"expr":
    f"count by (instance) (cabinetd_device_up{J} == 0)", "legend": "{{instance}}"}], w=8, thresholds=RED0)
f.panel("timeseries", "Poll errors per second, top 10 devices", [{"expr":
    f"topk(10, sum by (instance, device) (rate(cabinetd_poll_errors_total{J}[$__rate_interval])))",
    "legend": "{{instance}} {{device}}"}], w=8, unit="reqps")
f.panel("timeseries", "Poll duration p95 (fleet)", [{"expr":
    f"histogram_quantile(0.95, sum by (le) (rate(cabinetd_poll_duration_seconds_bucket{J}[$__rate_interval])))",
    "legend": "p95"}], w=8, unit="s")
f.panel("bargauge", "Lamp failures by cabinet", [{"expr":
    f"sum by (instance) (cabinetd_dali_lamp_failures{J}) > 0", "legend": "{{instance}}"}], w=8, thresholds=RED0)
f.panel("timeseries", "Commands by status (fleet)", [{"expr":
    f"sum by (status) (increase(cabinetd_commands_total{J}[$__rate_interval]))", "legend": "{{status}}"}], w=8)
f.panel("stat", "Clock drift > 30 s", [f"count(abs(cabinetd_time_seconds{J} - timestamp(cabinetd_time_seconds{J})) > 30) or vector(0)"],
        w=8, thresholds=RED0)
f.row("Energy")
f.panel("barchart", "Fleet energy per day", [
    {"expr": f"sum(increase(cabinetd_energy_kwh_total{J}[1d]))", "legend": "consumed"},
    {"expr": f"sum(increase(cabinetd_energy_baseline_kwh_total{J}[1d]))", "legend": "baseline"}],
    w=12, unit="kwatth", extra={"interval": "1d"})
f.panel("stat", "Fleet savings (last 7 days)", [
    f"1 - sum(increase(cabinetd_energy_kwh_total{J}[7d])) / sum(increase(cabinetd_energy_baseline_kwh_total{J}[7d]))"],
    w=6, unit="percentunit")
f.panel("bargauge", "Lowest savings (7 days), 10 cabinets", [{"expr":
    f"bottomk(10, 1 - sum by (instance) (increase(cabinetd_energy_kwh_total{J}[7d])) / sum by (instance) (increase(cabinetd_energy_baseline_kwh_total{J}[7d])))",
    "legend": "{{instance}}"}], w=6, unit="percentunit")
fleet = dashboard("cabinetd-fleet", "cabinetd — fleet",
                  "All street cabinets: health, uplink, outbox, devices, DALI lamps, energy and savings.",
                  [DSVAR, JOBVAR], f.panels)

out = sys.argv[1]
for name, dd in (("cabinet", cab), ("fleet", fleet)):
    with open(f"{out}/{name}.json", "w") as fh:
        json.dump(dd, fh, indent=2, ensure_ascii=False)
        fh.write("\n")
