#!/usr/bin/env bash
# Captures the examples of docs/protocol.md from the demo cabinet (config/demo.toml) talking to
# a Mosquitto broker of its own on a free loopback port: every message on cabinets/v1/#, one per
# line as `RETAINED TOPIC PAYLOAD`, while it sends the commands and desired configurations below,
# freezes the broker for a few seconds (replay), stops the cabinet cleanly, then kills it (will).
#
#   docs/capture-examples.sh [OUT]      (default OUT: target/protocol-examples.txt)
#   KEEP=FILE docs/capture-examples.sh  also keeps the daemon's log in FILE
#
# Needs mosquitto, mosquitto_sub/_pub (Debian: mosquitto, mosquitto-clients) and curl.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-target/protocol-examples.txt}"
cargo build --quiet
BIN=target/debug/cabinetd
TMP="$(mktemp -d)"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -n "${KEEP:-}" ] && cp "$TMP/daemon.log" "$KEEP" || true
  rm -rf "$TMP"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PORT="$(free_port)"
HTTP="$(free_port)"
MOSQ="$(command -v mosquitto || echo /usr/sbin/mosquitto)"
mkdir -p "$TMP/broker" && chmod 777 "$TMP/broker"
printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location %s/broker/\nlog_dest none\n' \
  "$PORT" "$TMP" >"$TMP/mosquitto.conf"
broker() { "$MOSQ" -c "$TMP/mosquitto.conf" & BROKER=$!; PIDS+=("$BROKER"); sleep 0.5; }
broker
# A persistent QoS 1 subscriber: what is published while it reconnects is queued for it.
(while :; do
  mosquitto_sub -p "$PORT" -c -i capture -q 1 -t 'cabinets/v1/#' -F '%r %t %p' 2>/dev/null || true
  sleep 0.2
done) >"$TMP/messages.txt" &
PIDS+=($!)
sleep 0.5

cat >"$TMP/override.toml" <<EOF
[storage]
path = "$TMP/state"
[uplink]
broker = "mqtt://127.0.0.1:$PORT"
keep_alive = "2s"
[http]
listen = "127.0.0.1:$HTTP"
EOF
cabinet() { "$BIN" run --config config/demo.toml --config "$TMP/override.toml" 2>>"$TMP/daemon.log" & DAEMON=$!; PIDS+=("$DAEMON"); }
ready() { for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$HTTP/readyz" >/dev/null 2>&1 && return 0; sleep 0.1; done; return 1; }
cabinet
ready
sleep 4
pub() { mosquitto_pub -p "$PORT" -q 1 -t "cabinets/v1/$1" -m "$2"; }
T='2030-01-01T00:00:00Z'
pub demo-001/cmd '{"id":"c-1","action":"light.set","args":{"target":"group:1","level_percent":40,"fade_s":2,"hold_s":600},"expires_at":"'$T'"}'
pub demo-001/cmd '{"id":"c-2","action":"point.write","args":{"point":"meter-main/power_limit","value":4000},"expires_at":"'$T'"}'
pub demo-001/cmd '{"id":"c-3","action":"point.write","args":{"point":"meter-main/power_limit","value":20000},"expires_at":"'$T'"}'
pub demo-001/cmd '{"id":"c-4","action":"point.write","args":{"point":"meter-main/voltage_l1","value":1},"expires_at":"'$T'"}'
pub demo-001/cmd '{"id":"c-5","action":"light.release","args":{"target":"group:1"},"expires_at":"'$T'"}'
pub demo-001/cmd '{"id":"c-6","action":"light.set","args":{"target":"all","level_percent":100},"expires_at":"2020-01-01T00:00:00Z"}'
pub demo-001/cmd '{"id":"c-7","action":"light.dance","args":{},"expires_at":"'$T'"}'
pub demo-001/cmd '{"id":"c-8","action":"light.set","args":{"target":"group:9","level_percent":50},"expires_at":"'$T'"}'
pub demo-001/cmd '{"id":"c-9","action":"camera.reboot","args":{"camera":"cam-darcy"},"expires_at":"'$T'"}'
pub demo-001/cmd '{"id":"c-10","action":"scene.run","args":{"scene":"emergency-route-a"},"expires_at":"'$T'"}'
pub all/cmd '{"id":"crisis-1","action":"light.set","args":{"target":"all","level_percent":100},"expires_at":"'$T'"}'
sleep 2
pub demo-001/cmd '{"id":"c-1","action":"light.set","args":{"target":"group:1","level_percent":40},"expires_at":"'$T'"}'
sleep 1
# Desired configuration: one applied, one rejected (retained, as the central post keeps them).
mosquitto_pub -p "$PORT" -q 1 -r -t cabinets/v1/demo-001/config/desired \
  -m '{"version":"2026-11-26.1","config":"[[dali]]\nname = \"bus-a\"\ninterface = \"sim\"\nluminaires = 6\npoll = \"10s\"\n"}'
sleep 3
mosquitto_pub -p "$PORT" -q 1 -r -t cabinets/v1/demo-001/config/desired \
  -m '{"version":"2026-11-26.2","config":"[[dali]]\nname = \"bus-a\"\ninterface = \"sim\"\nluminaires = 99\n[uplink]\nbroker = \"mqtt://elsewhere\"\n"}'
sleep 3
# An outage: the broker freezes for 8 s (SIGSTOP: the cabinet's keep-alive gives up, the
# subscriber's does not); the backlog comes back with "replay": true.
kill -STOP "$BROKER"
sleep 8
kill -CONT "$BROKER"
sleep 8
# A clean stop: the offline status. Then a crash: the broker publishes the will.
kill -TERM "$DAEMON"
wait "$DAEMON" 2>/dev/null || true
sleep 1
cabinet
ready
sleep 3
kill -KILL "$DAEMON"
sleep 2
mkdir -p "$(dirname "$OUT")"
cp "$TMP/messages.txt" "$OUT"
echo "$(wc -l <"$OUT") messages in $OUT"
