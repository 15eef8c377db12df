#!/usr/bin/env python3
"""Pipeline benchmark: Modbus polling → sled outbox → MQTT, measured from outside the daemon.

Scenario (issue #2): N devices × R holding registers polled every second, every value published
every poll (heartbeat = poll, no deadband), for a fixed duration. One pymodbus server serves all
devices on one address, so they share one TCP connection and its line owner, requests one at a
time, as units behind one Modbus TCP→RTU gateway would (cabinetd >= issue 13; before, each device
had a connection of its own); Mosquitto on loopback;
a paho subscriber counts records and measures poll-to-broker latency (record `ts` = acquisition
time, to arrival at the subscriber).

Outage scenarios (issue #3): `--outage stop` stops the broker for `--outage-s` seconds then starts
it again; `--outage freeze` SIGSTOPs it instead (TCP stays open, nothing answers), then SIGCONTs.

Prints one table of figures. Run through tests/bench/run.sh, which builds the release binary.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import urllib.request

try:  # zstd payloads (uplink.compression = "zstd", SPEC v1.1)
    import zstandard
except ImportError:  # pragma: no cover - the bench venv has it (tests/requirements.txt)
    zstandard = None

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def decode_payload(payload: bytes) -> dict:
    """A record message: plain JSON, or one zstd frame whose content is the JSON envelope."""
    if payload.startswith(ZSTD_MAGIC):
        payload = zstandard.ZstdDecompressor().decompress(payload, max_output_size=64 << 20)
    return json.loads(payload)

ROOT = Path(__file__).resolve().parents[2]
TICK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, deadline_s: float = 15) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port} after {deadline_s}s")


def parse_ts(ts: str) -> float:
    # 2026-11-26T08:00:00.123Z
    from datetime import datetime, timezone

    return datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()


class Broker:
    def __init__(self, workdir: Path):
        self.port = free_port()
        # Started as root, mosquitto drops to its own user: it must be able to write its
        # persistence, or the subscriber's session does not survive the broker restart.
        os.chmod(workdir, 0o777)
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
            f"persistence_location {workdir}/\nmax_inflight_messages 0\nmax_queued_messages 0\n"
            "max_queued_bytes 0\nlog_dest none\n"
        )
        self.proc = None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(["/usr/sbin/mosquitto", "-c", str(self.conf)])
        wait_port(self.port)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)

    def signal(self, sig) -> None:
        self.proc.send_signal(sig)


class Subscriber:
    """Persistent session, so nothing is missed while the broker restarts."""

    def __init__(self, port: int, topic: str):
        self.lock = threading.Lock()
        self.seqs: dict[str, list[int]] = {}
        self.latencies: list[float] = []
        self.first_fresh_after: float | None = None
        self.first_after: float | None = None
        self.watch_fresh_from: float | None = None
        self.records = 0
        self.wire_bytes = 0
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-{os.getpid()}", clean_session=False)
        self.c.max_inflight_messages_set(0)
        # paho backs off up to 2 min between reconnects by default; the bench measures the
        # daemon, not the subscriber, so the subscriber retries every second. (Shorter delays
        # made it worse: with 0.1 s, paho took 5–7 s to deliver again after the broker was back.)
        self.c.reconnect_delay_set(min_delay=1, max_delay=1)
        self.c.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.c.on_message = self.on_message
        self.c.connect("127.0.0.1", port, keepalive=10)
        self.c.loop_start()

    def on_message(self, c, u, msg) -> None:
        now = time.time()
        if not msg.topic.endswith(("/telemetry", "/events", "/cmd/result")):
            return
        env = decode_payload(msg.payload)
        with self.lock:
            if env["stream"] == "telemetry":
                self.wire_bytes += len(msg.payload)
            s = self.seqs.setdefault(env["stream"], [])
            for r in env["records"]:
                s.append(r["seq"])
                if env["stream"] == "telemetry":
                    self.records += 1
                    if self.watch_fresh_from is not None and self.first_after is None:
                        if parse_ts(r["ts"]) >= self.watch_fresh_from:
                            self.first_after = now
                    if not env["replay"]:
                        self.latencies.append(now - parse_ts(r["ts"]))
                        if self.watch_fresh_from is not None and self.first_fresh_after is None:
                            if parse_ts(r["ts"]) >= self.watch_fresh_from:
                                self.first_fresh_after = now

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


def proc_stats(pid: int) -> tuple[int, float]:
    """(RSS bytes, CPU seconds) of a process."""
    with open(f"/proc/{pid}/status") as f:
        rss = next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmRSS:"))
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / TICK
    return rss, cpu


def parse_bytes(s: str) -> int:
    units = {"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}
    for u, m in units.items():
        if s.endswith(u):
            return int(float(s[: -len(u)]) * m)
    return int(s)


def dir_bytes(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except OSError:
                pass
    return total


def proc_io(pid: int) -> dict[str, int]:
    """/proc/PID/io counters: `write_bytes` (what reached the block device: the flash wear) and
    `wchar` (bytes passed to write(2) and friends, logs included)."""
    out = {}
    try:
        with open(f"/proc/{pid}/io") as f:
            for line in f:
                k, v = line.split(":")
                out[k] = int(v)
    except OSError:
        pass
    return out


def smaps_rollup(pid: int) -> dict[str, int]:
    """KiB of the process's memory by kind (heap = anonymous, files = mapped files)."""
    out = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                parts = line.split()
                if parts[0] in ("Rss:", "Anonymous:", "Pss_Anon:", "Pss_File:"):
                    out[parts[0].rstrip(":")] = int(parts[1])
    except OSError:
        pass
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default=str(ROOT / "target/release/cabinetd"))
    ap.add_argument("--devices", type=int, default=50)
    ap.add_argument("--registers", type=int, default=100)
    ap.add_argument("--duration", type=float, default=60)
    ap.add_argument("--outage", choices=["none", "stop", "freeze"], default="none")
    ap.add_argument("--outage-s", type=float, default=60)
    ap.add_argument("--budget", default="256MiB", help="storage.max_bytes")
    ap.add_argument("--compression", choices=["none", "zstd"], default="zstd")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="cabinetd-bench-"))
    broker = Broker(work)
    sub = Subscriber(broker.port, "cabinets/v1/bench/#")

    contents = work / "regs.json"
    contents.write_text(json.dumps({"holding": [{"address": 0, "raw": list(range(args.registers))}]}))
    peer = subprocess.Popen(
        [sys.executable, str(ROOT / "tests/peers/modbus_server.py"), "--tcp", "127.0.0.1:0", "--json", str(contents)],
        stdout=subprocess.PIPE,
        text=True,
    )
    modbus_port = int(peer.stdout.readline().split()[1])
    # Drain the peer's per-request lines so its pipe never fills.
    threading.Thread(target=lambda: [None for _ in peer.stdout], daemon=True).start()

    http_port = free_port()
    cfg = [
        f"""[cabinet]
id = "bench"
latitude = 47.322
longitude = 5.0415
timezone = "Europe/Paris"
[storage]
path = "{work}/state"
max_bytes = "{args.budget}"
[uplink]
broker = "mqtt://127.0.0.1:{broker.port}"
keep_alive = "5s"
compression = "{args.compression}"
[http]
listen = "127.0.0.1:{http_port}"
[log]
filter = "warn,cabinetd::uplink=info"
[security]
require_signed = false
"""
    ]
    for d in range(args.devices):
        cfg.append(
            f'[[modbus]]\nname = "dev{d:02}"\ntransport = "tcp"\naddress = "127.0.0.1:{modbus_port}"\n'
            f'unit_id = 1\npoll = "1s"\ntimeout = "500ms"\nheartbeat = "1s"\n'
        )
        for r in range(args.registers):
            cfg.append(f'  [[modbus.point]]\n  name = "r{r:03}"\n  table = "holding"\n  address = {r}\n  type = "u16"\n')
    (work / "bench.toml").write_text("\n".join(cfg))

    daemon = subprocess.Popen([args.binary, "run", "--config", str(work / "bench.toml")])
    wait_port(http_port)
    samples: list[tuple[float, int, float]] = []
    budget = parse_bytes(args.budget)
    disk: list[tuple[int, int]] = []  # (bytes of the store's files, records held), every second
    smaps_before = smaps_rollup(daemon.pid)

    def sample() -> None:
        rss, cpu = proc_stats(daemon.pid)
        samples.append((time.monotonic(), rss, cpu))
        if not disk or time.monotonic() - sample.last_disk >= 1.0:
            sample.last_disk = time.monotonic()
            try:
                st = json.load(urllib.request.urlopen(f"http://127.0.0.1:{http_port}/status", timeout=2))
                held = sum(st["outbox"]["records"].values())
            except Exception:
                held = -1
            disk.append((dir_bytes(work / "state" / "outbox"), held))

    sample.last_disk = 0.0

    try:
        # Warm-up: let every device connect and the first full poll go through.
        time.sleep(3)
        sample()
        with sub.lock:
            sub.latencies.clear()
            rec0 = sub.records
        t_start = time.monotonic()
        io_start = proc_io(daemon.pid)
        outage_done = args.outage == "none"
        restart_at = None
        drained_at = None
        restarted = time.monotonic()
        # Run for the duration; with an outage, also until the backlog is drained (at most 120 s
        # after the broker is back).
        while (
            time.monotonic() - t_start < args.duration
            or not outage_done
            or (args.outage != "none" and drained_at is None and time.monotonic() - restarted < 120)
        ):
            time.sleep(0.1)
            if len(samples) < 2 or time.monotonic() - samples[-1][0] >= 0.5:
                sample()
            if outage_done and args.outage != "none" and drained_at is None:
                with sub.lock:
                    u = set(sub.seqs.get("telemetry", []))
                if u and max(u) == len(u) and max(u) > 0 and len(sub.latencies) > 0 and sub.first_fresh_after:
                    drained_at = time.time()
            elapsed = time.monotonic() - t_start
            if not outage_done and restart_at is None and elapsed >= 5:
                print(f"[bench] broker {args.outage} for {args.outage_s:.0f} s", file=sys.stderr)
                if args.outage == "stop":
                    broker.stop()
                else:
                    broker.signal(signal.SIGSTOP)
                outage_started = time.monotonic()
                cpu_outage0 = samples[-1][2]
                restart_at = outage_started + args.outage_s
            if restart_at is not None and not outage_done and time.monotonic() >= restart_at:
                with sub.lock:
                    sub.watch_fresh_from = time.time()
                if args.outage == "stop":
                    broker.start()
                else:
                    broker.signal(signal.SIGCONT)
                restarted = time.monotonic()
                restarted_wall = time.time()
                cpu_outage = samples[-1][2] - cpu_outage0
                outage_done = True
                print("[bench] broker back", file=sys.stderr)
        t_end = time.monotonic()
        io_end = proc_io(daemon.pid)
        smaps_after = smaps_rollup(daemon.pid)
        try:
            st = json.load(urllib.request.urlopen(f"http://127.0.0.1:{http_port}/status", timeout=5))
            left = st["outbox"]["records"]
        except Exception as e:  # the figure is informative only
            left = f"unknown ({e})"
        # Stop producing: terminate the daemon cleanly, then wait for the subscriber to settle.
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(15)
        time.sleep(2)
    finally:
        if daemon.poll() is None:
            daemon.kill()
        peer.terminate()
        sub.close()
        broker.stop()

    with sub.lock:
        tel = sub.seqs.get("telemetry", [])
        uniq = set(tel)
        top = max(uniq) if uniq else 0
        missing = top - len(uniq)
        dups = len(tel) - len(uniq)
        lat = sorted(sub.latencies)
    window = t_end - t_start
    rss = [s[1] for s in samples]
    cpu_s = samples[-1][2] - samples[0][2]
    print()
    print(f"scenario            {args.devices} devices x {args.registers} registers every 1 s, {window:.0f} s, outage={args.outage}")
    print(f"records produced    {top}")
    print(f"outbox at the end   {left}")
    print(f"records delivered   {len(uniq)} unique, {dups} duplicates, {missing} missing")
    if missing:
        ranges, start, prev = [], None, None
        for q in range(1, top + 1):
            if q not in uniq:
                if start is None:
                    start = q
                prev = q
            elif start is not None:
                ranges.append(f"{start}..{prev}")
                start = None
        if start is not None:
            ranges.append(f"{start}..{prev}")
        print(f"missing ranges      {', '.join(ranges[:8])}{' …' if len(ranges) > 8 else ''} ({len(ranges)} ranges)")
    print(f"throughput          {(sub.records - rec0) / window:.0f} points/s delivered")
    print(f"daemon RSS          median {statistics.median(rss) / 2**20:.1f} MiB, peak {max(rss) / 2**20:.1f} MiB")
    print(f"daemon CPU          {cpu_s:.2f} s over {window:.0f} s = {100 * cpu_s / window:.1f} % of one core")
    if lat:
        p50 = lat[len(lat) // 2] * 1000
        p99 = lat[int(len(lat) * 0.99)] * 1000
        print(f"poll-to-broker      p50 {p50:.1f} ms, p99 {p99:.1f} ms (fresh records)")
    if sub.records:
        print(f"wire                {sub.wire_bytes / max(1, sub.records):.1f} bytes a point (telemetry payloads, compression={args.compression})")
    if io_start and io_end:
        wb = (io_end["write_bytes"] - io_start["write_bytes"]) / window / 1024
        wc = (io_end["wchar"] - io_start["wchar"]) / window / 1024
        print(f"disk writes         {wb:.1f} KiB/s to the device (write_bytes), {wc:.1f} KiB/s written by the process (wchar)")
    peak_disk = max(d[0] for d in disk) if disk else 0
    over = [d for d in disk if d[0] > budget]
    held = [d for d in disk if d[1] > 0]
    print(f"disk                peak {peak_disk / 2**20:.1f} MiB of a {args.budget} budget, sampled every second: exceeded {len(over)} of {len(disk)} samples")
    if held:
        top = max(held, key=lambda d: d[1])
        print(f"disk per record     {top[0] / top[1]:.1f} bytes ({top[1]} records held in {top[0] / 2**20:.1f} MiB, all files)")
    print(f"final disk          {disk[-1][0] / 2**20:.1f} MiB" if disk else "final disk          ?")
    for name, sm in (("before", smaps_before), ("after", smaps_after)):
        print(f"smaps_rollup {name:<6} " + ", ".join(f"{k} {v / 1024:.1f} MiB" for k, v in sm.items()))
    if args.outage != "none":
        fresh = sub.first_fresh_after
        print(f"outage CPU          {cpu_outage:.2f} s during {args.outage_s:.0f} s outage")
        if sub.first_after:
            print(f"first new record    {sub.first_after - restarted_wall:.2f} s after broker back (acquired after it; either lane)")
        if fresh:
            # Records polled before the daemon's session started go with the backlog (replay:
            # true); the first replay:false one comes from the next poll: up to a poll period more.
            print(f"first fresh record  {fresh - restarted_wall:.2f} s after broker back (replay: false)")
        if drained_at:
            print(f"backlog drained     {drained_at - restarted_wall:.2f} s after broker back")
    sys.exit(0 if missing == 0 else 1)


if __name__ == "__main__":
    main()
