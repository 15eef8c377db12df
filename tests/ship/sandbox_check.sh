#!/usr/bin/env bash
# Would the unit's sandbox and Type=notify contract hold? No systemd runs as PID 1 here, so the
# demo cabinet runs under strace, started from / like systemd does, with NOTIFY_SOCKET and
# WATCHDOG_USEC pointing at a listener of ours:
#  - every syscall is inside SystemCallFilter=@system-service ~@privileged @resources, socket
#    families inside RestrictAddressFamilies=, writes only under the state dir (ProtectSystem=
#    strict), /proc only the process's own (ProcSubset=pid) — tests/ship/sandbox_check.py;
#  - READY=1 is sent, and only once the HTTP endpoint listens (SPEC §5); WATCHDOG=1 keeps coming
#    at least every WATCHDOG_USEC/2 while the demo runs;
#  - SIGTERM → exit 0.
#
#   tests/ship/sandbox_check.sh [BINARY]   (default: target-cross/HOST/release/cabinetd,
#                                           built by cross/build.sh HOST / deb_install.sh)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
need strace strace
need systemd-analyze systemd
PY="$(ship_python)"
HOST="$(rustc -vV | sed -n 's/^host: //p')"
BIN="$(realpath -m "${1:-$ROOT/target-cross/$HOST/release/cabinetd}")"
[ -x "$BIN" ] || die "no binary at $BIN: run SMOKE=0 cross/build.sh $HOST first"
[ -f config/demo.toml ] || die "config/demo.toml is missing"
WATCHDOG_S=2 # WATCHDOG_USEC given to the daemon; it must ping at least every WATCHDOG_S/2
RUN_FOR_S=6

TMP="$(mktemp -d "${TMPDIR:-/tmp}/cabinetd-sandbox.XXXXXX")"
STRACE_PID="" LISTENER_PID="" DAEMON_PID=""
cleanup() {
  for p in $DAEMON_PID $STRACE_PID $LISTENER_PID; do kill -KILL "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT

PORT="$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
mkdir -p "$TMP/state"
printf '[storage]\npath = "%s/state"\n\n[http]\nlisten = "127.0.0.1:%s"\n' "$TMP" "$PORT" >"$TMP/override.toml"

# sd_notify listener: one line per datagram, "<monotonic seconds> <message>"; on READY=1 it
# connects to the HTTP port at once and logs HTTP-LISTENING or HTTP-REFUSED. Stops by itself.
"$PY" - "$TMP/notify.sock" "$TMP/notify.log" "$PORT" <<'EOF' &
import socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
s.settimeout(1.0)
end = time.monotonic() + 120
with open(sys.argv[2], "a", buffering=1) as out:
    while time.monotonic() < end:
        try:
            msg = s.recv(4096).decode(errors="replace").replace("\n", " ")
        except socket.timeout:
            continue
        if "READY=1" in msg.split():
            try:
                socket.create_connection(("127.0.0.1", int(sys.argv[3])), timeout=2).close()
                msg += " HTTP-LISTENING"
            except OSError:
                msg += " HTTP-REFUSED"
        out.write(f"{time.monotonic():.3f} {msg}\n")
EOF
LISTENER_PID=$!
for _ in $(seq 1 50); do [ -S "$TMP/notify.sock" ] && break; sleep 0.1; done
[ -S "$TMP/notify.sock" ] || die "notify listener did not start"

say "strace -f $BIN run (from /, NOTIFY_SOCKET, WATCHDOG_USEC=${WATCHDOG_S}s)"
(cd / && NOTIFY_SOCKET="$TMP/notify.sock" WATCHDOG_USEC=$((WATCHDOG_S * 1000000)) \
  exec strace -f -qq -y -o "$TMP/trace" "$BIN" run --config "$ROOT/config/demo.toml" \
  --config "$TMP/override.toml") >"$TMP/run.log" 2>&1 &
STRACE_PID=$!

FAILS=0
fail() { echo "  FAIL $*"; FAILS=$((FAILS + 1)); }
up=no
deadline=$(($(date +%s) + 60))
while [ "$(date +%s)" -lt "$deadline" ] && kill -0 "$STRACE_PID" 2>/dev/null; do
  if curl -fsS --max-time 2 -o /dev/null "http://127.0.0.1:$PORT/metrics" 2>/dev/null; then up=yes; break; fi
  sleep 0.2
done
if [ "$up" != yes ]; then
  tail -20 "$TMP/run.log"
  die "/metrics on 127.0.0.1:$PORT did not answer within 60 s"
fi
DAEMON_PID="$(pgrep -P "$STRACE_PID" | head -1)"
[ -n "$DAEMON_PID" ] || die "cannot find the daemon (child of strace $STRACE_PID)"
end=$(($(date +%s) + RUN_FOR_S))
while [ "$(date +%s)" -lt "$end" ] && kill -0 "$DAEMON_PID" 2>/dev/null; do sleep 0.5; done
"$BIN" status --http "127.0.0.1:$PORT" >/dev/null || fail "status --http failed"
kill -TERM "$DAEMON_PID"
deadline=$(($(date +%s) + 15))
while kill -0 "$DAEMON_PID" 2>/dev/null && [ "$(date +%s)" -lt "$deadline" ]; do sleep 0.2; done
rc=0
if kill -0 "$DAEMON_PID" 2>/dev/null; then
  fail "still running 15 s after SIGTERM"
else
  wait "$STRACE_PID" || rc=$? # strace exits with the tracee's status
  if [ "$rc" = 0 ]; then echo "  ok   SIGTERM → exit 0"; else fail "exit $rc after SIGTERM (want 0)"; fi
fi
DAEMON_PID="" STRACE_PID=""

say "sd_notify"
cp "$TMP/notify.log" "$SHIP_OUT/sandbox-notify.log"
"$PY" - "$TMP/notify.log" "$WATCHDOG_S" <<'EOF' || FAILS=$((FAILS + 1))
import sys
log, wd = sys.argv[1], float(sys.argv[2])
msgs = [(float(t), m) for t, m in (l.rstrip("\n").split(" ", 1) for l in open(log) if " " in l)]
ready = [t for t, m in msgs if "READY=1" in m.split()]
pings = [t for t, m in msgs if "WATCHDOG=1" in m.split()]
stopping = [t for t, m in msgs if "STOPPING=1" in m.split()]
ok = True
if not ready:
    print("  FAIL no READY=1 received"); ok = False
else:
    print(f"  ok   READY=1 ({len(msgs)} notifications in all)")
    # SPEC §5: READY only once the HTTP endpoint listens (the listener connected on receipt).
    first = next(m for t, m in msgs if "READY=1" in m.split())
    if "HTTP-LISTENING" in first:
        print("  ok   HTTP endpoint was listening when READY=1 arrived")
    else:
        print("  FAIL READY=1 arrived before the HTTP endpoint listened"); ok = False
    after = [t for t in pings if t > ready[0]]
    gaps = [b - a for a, b in zip([ready[0]] + after, after)]
    if len(after) < 3:
        print(f"  FAIL only {len(after)} WATCHDOG=1 after READY with WATCHDOG_USEC={wd:g}s"); ok = False
    elif max(gaps) > wd / 2 + 0.5:
        print(f"  FAIL WATCHDOG=1 gap {max(gaps):.2f}s > WATCHDOG_USEC/2 = {wd / 2:g}s"); ok = False
    else:
        print(f"  ok   {len(after)} WATCHDOG=1, largest gap {max(gaps):.2f}s (limit {wd / 2 + 0.5:g}s)")
print(f"  {'ok  ' if stopping else 'note'} STOPPING=1 {'sent' if stopping else 'not sent'} on SIGTERM")
sys.exit(0 if ok else 1)
EOF

say "sandbox (strace vs the unit's filters)"
systemd-analyze syscall-filter >"$TMP/groups.txt" 2>/dev/null || die "systemd-analyze syscall-filter"
cp "$TMP/trace" "$SHIP_OUT/sandbox-strace.log"
"$PY" tests/ship/sandbox_check.py "$TMP/trace" "$TMP/groups.txt" "$TMP/state" || FAILS=$((FAILS + 1))

[ "$FAILS" = 0 ] || { tail -5 "$TMP/run.log"; die "$FAILS check(s) failed (trace: $SHIP_OUT/sandbox-strace.log)"; }
say "ok"
