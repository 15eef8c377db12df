#!/usr/bin/env python3
"""Rules benchmark (issue 10): what 1,000 rules cost over the 5,000 points/s workload, and how
fast a rule reacts, measured from outside the daemon (the release binary).

Workload: the pipeline benchmark's (`pipeline.py`): N devices x R holding registers polled every
second, one pymodbus server, Mosquitto on loopback. Two runs of `--duration` seconds each:
  1. the workload alone;
  2. the workload plus `--rules` rules over its points (`devDD/rRRR > 60000 and devEE/rRRR < 2`,
     each point read by some rule; they never fire: the cost measured is every reading going
     through the readings tap into the core, and the core's evaluation) and one rule that does
     fire: `trigger/x > 50` writes `actuator/y = 1` on another pymodbus device, on_clear `0`.
The trigger's input register is toggled every `--toggle` seconds through the peer's control
channel. Reaction latency = the actuator's write received by the peer, minus the trigger
device's first read of the changed register (both as the peers print them: `REQ` and `WRITE`
lines, read here with the same monotonic clock). Extra CPU = (CPU of run 2 - CPU of run 1) /
duration, in % of one core.

Prints figures, asserts nothing. Run: tests/bench/rules.sh [--duration 60] [--rules 1000].
Figures measured on a machine shared with other work are preliminary.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipeline import ROOT, Broker, free_port, proc_stats, wait_port  # noqa: E402


class Peer:
    """A modbus_server.py with its control channel; records REQ/WRITE lines with their time."""

    def __init__(self, work: Path, name: str, spec: dict, control: bool = False):
        path = work / f"{name}.json"
        path.write_text(json.dumps(spec))
        args = [sys.executable, str(ROOT / "tests/peers/modbus_server.py"), "--tcp", "127.0.0.1:0", "--json", str(path)]
        if control:
            args.append("--control")
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        self.port = int(self.proc.stdout.readline().split()[1])
        self.lock = threading.Lock()
        self.lines: list[tuple[float, str]] = []
        self.replies: list[str] = []
        self.cv = threading.Condition(self.lock)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            now = time.monotonic()
            with self.cv:
                if line.startswith(("OK", "ERR")):
                    self.replies.append(line.strip())
                    self.cv.notify_all()
                elif line.startswith(("REQ", "WRITE")):
                    self.lines.append((now, line.strip()))

    def set(self, table: str, addr: int, value: int) -> float:
        with self.cv:
            n = len(self.replies)
        self.proc.stdin.write(f"set {table} {addr} {value}\n")
        self.proc.stdin.flush()
        with self.cv:
            self.cv.wait_for(lambda: len(self.replies) > n, timeout=10)
        return time.monotonic()

    def stop(self) -> None:
        self.proc.terminate()


def config(work: Path, broker: int, http: int, modbus: int, trig: int, act: int, devices: int, registers: int, rules: int) -> str:
    cfg = [
        f"""[cabinet]
id = "bench"
latitude = 47.322
longitude = 5.0415
timezone = "Europe/Paris"
[storage]
path = "{work}/state"
max_bytes = "256MiB"
[uplink]
broker = "mqtt://127.0.0.1:{broker}"
keep_alive = "5s"
[http]
listen = "127.0.0.1:{http}"
[log]
filter = "warn"
[security]
require_signed = false
[[modbus]]
name = "trigger"
address = "127.0.0.1:{trig}"
poll = "20ms"
timeout = "500ms"
  [[modbus.point]]
  name = "x"
  table = "input"
  address = 0
[[modbus]]
name = "actuator"
address = "127.0.0.1:{act}"
poll = "1s"
timeout = "500ms"
  [[modbus.point]]
  name = "y"
  table = "holding"
  address = 0
  writable = true
[[rule]]
name = "reflex"
when = "trigger/x > 50"
  [[rule.then]]
  action = "point.write"
  args = {{ point = "actuator/y", value = 1 }}
  [[rule.on_clear]]
  action = "point.write"
  args = {{ point = "actuator/y", value = 0 }}
"""
    ]
    for d in range(devices):
        cfg.append(
            f'[[modbus]]\nname = "dev{d:02}"\ntransport = "tcp"\naddress = "127.0.0.1:{modbus}"\n'
            f'unit_id = 1\npoll = "1s"\ntimeout = "500ms"\nheartbeat = "1s"\n'
        )
        for r in range(registers):
            cfg.append(f'  [[modbus.point]]\n  name = "r{r:03}"\n  table = "holding"\n  address = {r}\n  type = "u16"\n')
    points = [(d, r) for d in range(devices) for r in range(registers)]
    for i in range(rules):
        a = points[(2 * i) % len(points)]
        b = points[(2 * i + 1) % len(points)]
        cfg.append(
            f'[[rule]]\nname = "r{i:04}"\nwhen = "dev{a[0]:02}/r{a[1]:03} > 60000 and dev{b[0]:02}/r{b[1]:03} < 2"\n'
            f'  [[rule.then]]\n  action = "event"\n  args = {{ kind = "bench_{i}", severity = "info", message = "never" }}\n'
        )
    return "\n".join(cfg)


def run(args, rules: int) -> dict:
    work = Path(tempfile.mkdtemp(prefix="cabinetd-rules-bench-"))
    broker = Broker(work)
    regs = Peer(work, "regs", {"holding": [{"address": 0, "raw": list(range(10, 10 + args.registers))}]})
    trig = Peer(work, "trigger", {"input": [{"address": 0, "raw": 0}]}, control=True)
    act = Peer(work, "actuator", {"holding": [{"address": 0, "raw": 0}]})
    http = free_port()
    (work / "bench.toml").write_text(config(work, broker.port, http, regs.port, trig.port, act.port, args.devices, args.registers, rules))
    daemon = subprocess.Popen([args.binary, "run", "--config", str(work / "bench.toml")])
    try:
        wait_port(http)
        time.sleep(3)
        _, cpu0 = proc_stats(daemon.pid)
        t0 = time.monotonic()
        latencies = []
        value = 0
        while time.monotonic() - t0 < args.duration:
            value = 0 if value else 60
            want = 1 if value else 0
            with act.lock:
                nwrites = sum(1 for _, l in act.lines if l.startswith("WRITE"))
            with trig.lock:
                nreq = len(trig.lines)
            trig.set("input", 0, value)
            end = time.monotonic() + 5
            seen = None
            while time.monotonic() < end:
                with act.lock:
                    writes = [(t, l) for t, l in act.lines if l.startswith("WRITE")]
                if len(writes) > nwrites:
                    seen = writes[nwrites]
                    break
                time.sleep(0.002)
            if seen and seen[1].endswith(f"values={want}"):
                with trig.lock:
                    reads = [t for t, l in trig.lines[nreq:] if l.startswith("REQ")]
                # The first read of the trigger after the change reached the peer's datastore.
                first = next((t for t in reads if t <= seen[0]), None)
                if first is not None:
                    latencies.append(seen[0] - first)
            time.sleep(max(0.0, args.toggle - 0.05))
        _, cpu1 = proc_stats(daemon.pid)
        window = time.monotonic() - t0
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(15)
    finally:
        if daemon.poll() is None:
            daemon.kill()
        for p in (regs, trig, act):
            p.stop()
        broker.stop()
    return {"cpu": cpu1 - cpu0, "window": window, "latencies": sorted(latencies)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default=str(ROOT / "target/release/cabinetd"))
    ap.add_argument("--devices", type=int, default=50)
    ap.add_argument("--registers", type=int, default=100)
    ap.add_argument("--rules", type=int, default=1000)
    ap.add_argument("--duration", type=float, default=60)
    ap.add_argument("--toggle", type=float, default=0.5)
    args = ap.parse_args()
    base = run(args, 0)
    with_rules = run(args, args.rules)
    extra = (with_rules["cpu"] / with_rules["window"] - base["cpu"] / base["window"]) * 100
    lat = with_rules["latencies"]
    print()
    print(f"workload            {args.devices} x {args.registers} points every 1 s ({args.devices * args.registers} points/s), {args.duration:.0f} s per run")
    print(f"daemon CPU          {100 * base['cpu'] / base['window']:.1f} % of a core without rules, "
          f"{100 * with_rules['cpu'] / with_rules['window']:.1f} % with {args.rules} rules")
    print(f"extra CPU           {extra:.2f} % of one core for {args.rules} rules")
    if lat:
        p50 = statistics.median(lat) * 1000
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000
        print(f"reaction            {len(lat)} input changes: p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {lat[-1] * 1000:.1f} ms "
              "(trigger read by the poll -> write received by the other device)")
    else:
        print("reaction            no write seen")


if __name__ == "__main__":
    main()
