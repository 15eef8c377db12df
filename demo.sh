#!/usr/bin/env bash
# Runs the demo cabinet (config/demo.toml): simulated equipment served in-process on loopback,
# state in ./demo-state, HTTP on 127.0.0.1:9108, MQTT to 127.0.0.1:1883 when a broker is there.
# Ctrl-C stops it cleanly (the outbox is flushed; undelivered records wait for the next run).
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v cargo >/dev/null 2>&1; then
  [[ -x "$HOME/.cargo/bin/cargo" ]] || curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
  export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v cc >/dev/null 2>&1; then
  echo "cabinetd demo: a C compiler is needed to build ring (TLS): apt-get install gcc" >&2
  exit 1
fi
# A first build takes a few minutes on a small machine: show cargo's progress, not silence.
echo "cabinetd demo: building the release binary (cargo build --release)…"
cargo build --release
cat <<'MSG'

cabinetd demo: starting the demo cabinet (config/demo.toml; Ctrl-C stops it cleanly)
  status     http://127.0.0.1:9108/status     (or: target/release/cabinetd status)
  metrics    http://127.0.0.1:9108/metrics
  MQTT       mosquitto_sub -v -t 'cabinets/v1/#'   (needs a broker on 127.0.0.1:1883;
             without one the cabinet keeps polling and buffering, and says so)

MSG
exec target/release/cabinetd run --config config/demo.toml "$@"
