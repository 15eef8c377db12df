#!/usr/bin/env bash
# 50 cameras supervised by the daemon with events on: the daemon's extra RSS and CPU against the
# same daemon without cameras. Figures, not assertions (not part of the test suite).
#
#   tests/bench/cameras.sh [CAMERAS] [SECONDS]      (defaults: 50 cameras, 60 s window)
#
# The cameras are the peers of the onvif crate's benchmark (`supervise_bench --peer N`, another
# process): N HTTP listeners on 127.0.0.1 that hold PullMessages until their timeout unless a
# motion change (every 15 s per camera, phase-shifted) comes first. Each daemon run (0 cameras,
# then N) gets a 15 s warm-up, then RSS (VmRSS) and CPU time (utime+stime of /proc/PID/stat) are
# read over the window. Camera settings are the defaults (health every 30 s, events on).
set -euo pipefail
cd "$(dirname "$0")/../.."
CAMERAS=${1:-50}
WINDOW=${2:-60}
WARMUP=15

cargo build --release --quiet
cargo build --release --quiet -p cabinetd-onvif --example supervise_bench
BIN=$PWD/target/release/cabinetd
PEER=$PWD/target/release/examples/supervise_bench
MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  exec 3>&- 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

BROKER=$(free_port)
"$MOSQUITTO" -p "$BROKER" >/dev/null 2>&1 &
PIDS+=($!)

# The peers run until their stdin closes (fd 3, closed by cleanup).
mkfifo "$WORK/peer-in"
"$PEER" --peer "$CAMERAS" <"$WORK/peer-in" >"$WORK/ports" &
PIDS+=($!)
exec 3>"$WORK/peer-in"
for _ in $(seq 100); do [[ -s $WORK/ports ]] && break; sleep 0.1; done
PORTS=$(sed -n 's/^PORTS //p' "$WORK/ports" | tr ',' ' ')
printf 'pw\n' >"$WORK/cam-pw"
chmod 600 "$WORK/cam-pw"

config() { # $1 = number of cameras, $2 = state dir, $3 = HTTP port
  local http=$3
  cat <<EOF
[cabinet]
id = "bench-cab"
latitude = 47.3220
longitude = 5.0415
timezone = "Europe/Paris"
[storage]
path = "$2"
max_bytes = "64MiB"
[uplink]
broker = "mqtt://127.0.0.1:$BROKER"
[http]
listen = "127.0.0.1:$http"
[log]
filter = "warn"
[security]
require_signed = false
EOF
  local i=0
  for port in $PORTS; do
    ((i < $1)) || break
    printf '[[camera]]\nname = "cam-%d"\naddress = "http://127.0.0.1:%d/onvif/device_service"\nusername = "operator"\npassword_file = "%s"\n' \
      "$i" "$port" "$WORK/cam-pw"
    i=$((i + 1))
  done
}

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
HZ=$(getconf CLK_TCK)

measure() { # $1 = cameras; prints "RSS_KIB CPU_PERCENT CAMERAS_UP"
  local dir="$WORK/run-$1" http; mkdir -p "$dir"; http=$(free_port)
  config "$1" "$dir/state" "$http" >"$dir/cabinetd.toml"
  "$BIN" run --config "$dir/cabinetd.toml" 2>"$dir/log" &
  local pid=$!
  PIDS+=("$pid")
  sleep "$WARMUP"
  local t0 r0; t0=$(ticks "$pid"); r0=$(date +%s.%N)
  sleep "$WINDOW"
  local t1 r1 mem up; t1=$(ticks "$pid"); r1=$(date +%s.%N); mem=$(rss "$pid")
  up=$(curl -s "http://127.0.0.1:$http/status" | python3 -c 'import json,sys; print(sum(1 for d in json.load(sys.stdin)["devices"] if d["up"]))')
  kill -TERM "$pid"; wait "$pid" || true
  python3 -c "print($mem, round(($t1-$t0)/$HZ/($r1-$r0)*100, 3), $up)"
}

read -r RSS0 CPU0 _ < <(measure 0)
read -r RSS1 CPU1 UP1 < <(measure "$CAMERAS")
echo "cabinetd, ${WINDOW} s window after a ${WARMUP} s warm-up (health every 30 s, events on)"
echo "  0 cameras:        RSS ${RSS0} KiB, CPU ${CPU0} % of one core"
echo "  ${CAMERAS} cameras:       RSS ${RSS1} KiB, CPU ${CPU1} % of one core (${UP1} up at the end)"
python3 -c "print(f'  extra for ${CAMERAS} cameras: RSS {($RSS1-$RSS0)/1024:.2f} MiB, CPU {$CPU1-$CPU0:.3f} % of one core')"
grep -h -i -E 'error|panic' "$WORK"/run-*/log | head -5 || true
