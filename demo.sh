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
cargo build --release --quiet
echo "cabinetd demo: status at http://127.0.0.1:9108/status, metrics at /metrics; Ctrl-C to stop"
exec target/release/cabinetd run --config config/demo.toml "$@"
