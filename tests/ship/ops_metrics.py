"""Checks of the ops assets (Grafana dashboards, Prometheus alerts) against cabinetd's metrics.

Standard library only. Subcommands (see tests/ship/ops_checks.sh, dashboard_metrics_check.sh):

  validate DASHBOARD.json...          schema check: uid, title, panels with title, datasource
                                      and targets with refId, expr and datasource uid
  extract OUT.txt FILE...             every metric name queried by the dashboards (.json) or rule
                                      files (.yml: the `expr:` lines), sorted, one per line
  promql-rules OUT.yml DASHBOARD...   every dashboard expr as a recording rule, Grafana variables
                                      substituted, so `promtool check rules` parses the PromQL
  compare SCRAPE NAMES.txt PROPOSED.txt SRC_DIR... [--strict]
                                      each queried name must appear in the /metrics scrape; a name
                                      registered in the sources (a labelled family with no series
                                      yet) or listed in PROPOSED.txt (asked of the daemon, not
                                      there yet) is only a warning unless --strict
"""

import json
import re
import sys

# Series that do not come from cabinetd's own registry.
SYNTHETIC = {"up"}  # added by Prometheus per target
EXTERNAL_OK = {"process_start_time_seconds"}  # prometheus crate process collector
KEYWORDS = {
    "and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
    "group_left", "group_right", "inf", "nan", "atan2",
}


def metric_names(expr):
    """Metric names referenced by a PromQL expression (Grafana variables allowed)."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    s = re.sub(r"'(?:[^'\\]|\\.)*'", "''", s)
    s = re.sub(r"\{[^}]*\}", "", s)  # label matchers
    s = re.sub(r"\[[^\]]*\]", "", s)  # ranges and subqueries
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    s = re.sub(r"\$\{?\w+\}?", " ", s)  # $__rate_interval, ${datasource}
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", s):
        tok = m.group(0)
        start = m.start()
        if start > 0 and (s[start - 1].isdigit() or s[start - 1] == "."):
            continue  # suffix of a number such as 1e3
        if re.match(r"\s*\(", s[m.end():]):
            continue  # function or aggregation
        if tok.lower() in KEYWORDS:
            continue
        names.add(tok)
    return names


def dashboard_exprs(path):
    with open(path, encoding="utf-8") as fh:
        dash = json.load(fh)
    out = []
    for p in iter_panels(dash.get("panels", [])):
        for t in p.get("targets", []):
            if "expr" in t:
                out.append((p.get("title", "?"), t["expr"]))
    for v in dash.get("templating", {}).get("list", []):
        q = v.get("query")
        if isinstance(q, dict):
            q = q.get("query")
        if v.get("type") == "query" and isinstance(q, str):
            m = re.match(r"label_values\((.*),\s*\w+\)\s*$", q)
            out.append(("variable " + v["name"], m.group(1) if m else q))
    return out


def rule_exprs(path):
    out = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            m = re.match(r"\s*expr:\s*(.+?)\s*$", line)
            if m:
                e = m.group(1)
                if e[:1] in "\"'" and e[-1:] == e[:1]:
                    e = e[1:-1]
                out.append(("rule", e))
    return out


def iter_panels(panels):
    for p in panels:
        yield p
        yield from iter_panels(p.get("panels", []))


def validate(paths):
    errors = []
    for path in paths:
        try:
            with open(path, encoding="utf-8") as fh:
                dash = json.load(fh)
        except (OSError, ValueError) as e:
            errors.append(f"{path}: not valid JSON: {e}")
            continue
        for key in ("uid", "title", "panels", "schemaVersion"):
            if not dash.get(key):
                errors.append(f"{path}: dashboard has no {key}")
        variables = {v.get("name") for v in dash.get("templating", {}).get("list", [])}
        ids = set()
        n = 0
        for p in iter_panels(dash.get("panels", [])):
            where = f"{path}: panel {p.get('id')} ({p.get('title')!r})"
            if p.get("id") in ids:
                errors.append(f"{where}: duplicate panel id")
            ids.add(p.get("id"))
            gp = p.get("gridPos", {})
            if not all(isinstance(gp.get(k), int) for k in ("h", "w", "x", "y")):
                errors.append(f"{where}: gridPos needs integer h, w, x, y")
            if p.get("type") == "row":
                continue
            n += 1
            if not p.get("title"):
                errors.append(f"{where}: no title")
            ds = p.get("datasource") or {}
            if ds.get("type") != "prometheus" or not ds.get("uid"):
                errors.append(f"{where}: datasource needs type prometheus and a uid")
            targets = p.get("targets") or []
            if not targets:
                errors.append(f"{where}: no targets")
            refs = set()
            for t in targets:
                tds = t.get("datasource") or {}
                if not t.get("expr"):
                    errors.append(f"{where}: target {t.get('refId')} has no expr")
                if not t.get("refId") or t.get("refId") in refs:
                    errors.append(f"{where}: target refId missing or duplicate")
                refs.add(t.get("refId"))
                if not tds.get("uid"):
                    errors.append(f"{where}: target {t.get('refId')} has no datasource uid")
                for var in re.findall(r"\$\{?(\w+)\}?", t.get("expr", "") + tds.get("uid", "")):
                    if not var.startswith("__") and var not in variables:
                        errors.append(f"{where}: uses undefined variable ${var}")
        if n == 0:
            errors.append(f"{path}: no query panels")
        print(f"  {path}: {n} panels, uid {dash.get('uid')}")
    return errors


def check_names(names, source):
    """Names must be cabinetd_* or one of the known external series: catches parsing slips."""
    errors = []
    for name in sorted(names):
        if not (name.startswith("cabinetd_") or name in SYNTHETIC or name in EXTERNAL_OK):
            errors.append(f"{source}: unexpected metric name {name!r}")
    return errors


def extract(out, paths):
    names, errors = set(), []
    for path in paths:
        exprs = dashboard_exprs(path) if path.endswith(".json") else rule_exprs(path)
        if not exprs:
            errors.append(f"{path}: no expressions found")
        for where, expr in exprs:
            found = metric_names(expr)
            if not found and "vector(" not in expr and "time()" not in expr:
                errors.append(f"{path}: {where}: no metric in {expr!r}")
            errors += check_names(found, f"{path}: {where}")
            names |= found
    with open(out, "w", encoding="utf-8") as fh:
        fh.write("".join(n + "\n" for n in sorted(names)))
    print(f"  {len(names)} metric names → {out}")
    return errors


def promql_rules(out, paths):
    subst = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1d",
             "$job": "cabinetd", "$instance": "cabinet-x"}
    lines = ["groups:"]
    for i, path in enumerate(paths):
        lines.append(f"  - name: dashboard_{i}")
        lines.append("    rules:")
        for j, (where, expr) in enumerate(dashboard_exprs(path)):
            for k, v in subst.items():
                expr = expr.replace(k, v)
            lines.append(f"      - record: dashboard_{i}_expr_{j}")
            lines.append(f"        expr: {json.dumps(expr)}")
            lines.append(f"        labels: {{ panel: {json.dumps(where)} }}")
    with open(out, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    return []


def compare(scrape_path, names_path, proposed_path, src_dirs, strict):
    import os

    proposed = set()
    with open(proposed_path, encoding="utf-8") as fh:
        for line in fh:
            name = line.split("#", 1)[0].strip()
            if name:
                proposed.add(name)

    exported = set()
    with open(scrape_path, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            m = re.match(r"# TYPE (\S+) (\S+)", line)
            if m:
                exported.add(m.group(1))
                if m.group(2) == "histogram":
                    exported |= {m.group(1) + s for s in ("_bucket", "_sum", "_count")}
            elif line and not line.startswith("#"):
                exported.add(re.split(r"[{\s]", line, maxsplit=1)[0])
    if not any(n.startswith("cabinetd_") for n in exported):
        return [f"{scrape_path}: no cabinetd_ series at all: not a cabinetd /metrics scrape"]
    registered = set()
    for d in src_dirs:
        for root, _, files in os.walk(d):
            for f in files:
                if f.endswith(".rs"):
                    with open(os.path.join(root, f), encoding="utf-8") as fh:
                        registered |= set(re.findall(r'"(cabinetd_[a-z0-9_]+)"', fh.read()))
    with open(names_path, encoding="utf-8") as fh:
        wanted = [n.strip() for n in fh if n.strip()]
    errors, warnings = [], []
    for name in sorted(proposed & exported):
        print(f"  note  {name} is exported now: delete it from {proposed_path}")
    for name in wanted:
        if name in SYNTHETIC or name in exported:
            continue
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        if name in registered or base in registered:
            warnings.append(f"{name}: registered in the sources but no series in this scrape "
                            "(labelled family without children yet)")
        elif name in proposed:
            warnings.append(f"{name}: proposed (listed in {proposed_path}), not exported yet")
        elif name in EXTERNAL_OK:
            errors.append(f"{name}: not exported (enable the prometheus crate's process collector)")
        else:
            errors.append(f"{name}: queried by the ops assets but not exported by cabinetd")
    for w in warnings:
        print(f"  warn  {w}")
    ok = len(wanted) - len(errors) - len(warnings)
    print(f"  {ok}/{len(wanted)} queried names present in {scrape_path}")
    return errors + (warnings if strict else [])


def main(argv):
    if len(argv) < 2:
        print(__doc__)
        return 2
    cmd, args = argv[1], argv[2:]
    if cmd == "validate":
        errors = validate(args)
    elif cmd == "extract":
        errors = extract(args[0], args[1:])
    elif cmd == "promql-rules":
        errors = promql_rules(args[0], args[1:])
    elif cmd == "compare":
        strict = "--strict" in args
        args = [a for a in args if a != "--strict"]
        errors = compare(args[0], args[1], args[2], args[3:], strict)
    else:
        print(__doc__)
        return 2
    for e in errors:
        print(f"  FAIL {e}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
