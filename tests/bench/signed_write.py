#!/usr/bin/env python3
"""Signed `point.write` round trip on loopback (issue 12 benchmark): publish a JWS command →
cabinetd verifies it, records its id (fsync), writes the register on a pymodbus server and waits
for its answer → the result record reaches a subscriber. N times, one command at a time; prints
p50/p90/p99/max of publish → result received.

Everything is real and local: Mosquitto, the pymodbus peer of the tests, the daemon binary
(`--bin`, default target/release/cabinetd), commands signed by joserfc (an independent JOSE
implementation) with a key made by `cabinetd key generate`. All tokens are signed before the
clock starts, so the figure is the cabinet's, not the signer's. The pymodbus peer's own log is
checked at the end: it saw exactly N writes.

Run through tests/bench/signed_write.sh (builds the release binary). Figures, not assertions.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from datetime import datetime, timedelta, timezone
from pathlib import Path

import paho.mqtt.client as mqtt
from joserfc import jws
from joserfc.jwk import OKPKey

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipeline import free_port, wait_port  # noqa: E402

warnings.simplefilter("ignore")  # joserfc: "EdDSA" is deprecated by RFC 9864; SPEC fixes it
ROOT = Path(__file__).resolve().parents[2]
PREFIX = "cabinets/v1"
CAB = "bench-cab"


def iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--bin", default=str(ROOT / "target/release/cabinetd"))
    ap.add_argument("--flush-interval", help="storage.flush_interval (default: the daemon's, 25ms)")
    ap.add_argument("--broker-nagle", action="store_true",
                    help="leave Nagle on in the broker (Mosquitto's default: set_tcp_nodelay false)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="signed-bench-"))
    procs: list[subprocess.Popen] = []
    try:
        os.chmod(work, 0o777)
        mport = free_port()
        (work / "mosquitto.conf").write_text(
            f"listener {mport} 127.0.0.1\nallow_anonymous true\nlog_dest none\n"
            # As config/mosquitto/mosquitto.conf ships it (without: --broker-nagle).
            + ("" if args.broker_nagle else "set_tcp_nodelay true\n")
        )
        procs.append(subprocess.Popen(["/usr/sbin/mosquitto", "-c", str(work / "mosquitto.conf")]))
        wait_port(mport)

        (work / "regs.json").write_text(json.dumps({"holding": [{"address": 0, "raw": 0}]}))
        modbus = subprocess.Popen(
            [sys.executable, str(ROOT / "tests/peers/modbus_server.py"), "--tcp", "127.0.0.1:0",
             "--json", str(work / "regs.json")],
            stdout=subprocess.PIPE, text=True,
        )
        procs.append(modbus)
        ready = modbus.stdout.readline().split()
        assert ready[0] == "READY", ready
        writes = []
        threading.Thread(
            target=lambda: [writes.append(l) for l in modbus.stdout if l.startswith("WRITE")],
            daemon=True,
        ).start()

        key = work / "ops.pem"
        trusted = subprocess.run(
            [args.bin, "key", "generate", "--out", str(key), "--kid", "bench"],
            check=True, capture_output=True, text=True,
        ).stdout.replace('actions = ["*"]', 'actions = ["point.write"]')
        http = free_port()
        (work / "cabinetd.toml").write_text(f"""
[cabinet]
id = "{CAB}"
latitude = 47.3
longitude = 5.0
[storage]
path = "{work}/state"
{f'flush_interval = "{args.flush_interval}"' if args.flush_interval else ''}
[uplink]
broker = "mqtt://127.0.0.1:{mport}"
[http]
listen = "127.0.0.1:{http}"
[log]
filter = "{os.environ.get('BENCH_LOG', 'warn')}"
[security]
require_signed = true
{trusted}
[[modbus]]
name = "panel"
address = "127.0.0.1:{ready[1]}"
poll = "1s"
  [[modbus.point]]
  name = "setpoint"
  table = "holding"
  address = 0
  type = "u16"
  writable = true
""")
        procs.append(subprocess.Popen([args.bin, "run", "--config", str(work / "cabinetd.toml")]))
        wait_port(http)

        signer = OKPKey.import_key(key.read_bytes())
        now = datetime.now(timezone.utc)
        tokens = []
        for i in range(args.n):
            payload = {"id": f"b{i}", "action": "point.write",
                       "args": {"point": "panel/setpoint", "value": i % 1000},
                       "cabinet": CAB, "issued_at": iso(now), "expires_at": iso(now + timedelta(hours=1))}
            tokens.append(jws.serialize_compact({"alg": "EdDSA", "kid": "bench"},
                                                json.dumps(payload).encode(), signer, algorithms=["EdDSA"]))

        done: dict[str, tuple[float, str]] = {}
        cond = threading.Condition()

        def on_message(c, u, msg):
            at = time.perf_counter()
            for r in json.loads(msg.payload)["records"]:
                with cond:
                    done[r["id"]] = (at, r["status"])
                    cond.notify_all()

        sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-sub")
        subscribed = threading.Event()
        sub.on_connect = lambda c, u, f, rc, p: c.subscribe(f"{PREFIX}/{CAB}/cmd/result", qos=1)
        sub.on_subscribe = lambda *a: subscribed.set()
        sub.on_message = on_message
        sub.connect("127.0.0.1", mport)
        sub.loop_start()
        assert subscribed.wait(10)
        pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-pub")
        pub.connect("127.0.0.1", mport)
        pub.loop_start()
        # The daemon is connected once its retained online status is there.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                body = subprocess.run(["curl", "-s", f"http://127.0.0.1:{http}/status"],
                                      capture_output=True, text=True, timeout=5).stdout
                if json.loads(body)["uplink"]["connected"]:
                    break
            except (ValueError, KeyError, subprocess.TimeoutExpired):
                pass
            time.sleep(0.1)

        rtts = []
        for i, tok in enumerate(tokens):
            t0 = time.perf_counter()
            pub.publish(f"{PREFIX}/{CAB}/cmd", tok, qos=1)
            with cond:
                if not cond.wait_for(lambda: f"b{i}" in done, timeout=10):
                    raise SystemExit(f"no result for b{i} within 10 s")
                at, status = done[f"b{i}"]
            if status != "succeeded":
                raise SystemExit(f"b{i}: {status}")
            rtts.append((at - t0) * 1000)
        deadline = time.monotonic() + 5
        while len(writes) < args.n and time.monotonic() < deadline:
            time.sleep(0.05)
        q = statistics.quantiles(rtts, n=100)
        print(f"signed point.write round trip, loopback, n={args.n} (publish -> verified, id fsynced,"
              f" register written on pymodbus -> result received)")
        print(f"  p50 {q[49]:.2f} ms   p90 {q[89]:.2f} ms   p99 {q[98]:.2f} ms   max {max(rtts):.2f} ms"
              f"   mean {statistics.mean(rtts):.2f} ms")
        print(f"  writes seen by pymodbus: {len(writes)} (expected {args.n})")
        print(f"  binary: {args.bin}; storage.flush_interval {args.flush_interval or 'default (25ms)'};"
              f" broker set_tcp_nodelay {'false' if args.broker_nagle else 'true'}")
        return 0 if len(writes) == args.n else 1
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
