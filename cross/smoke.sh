#!/usr/bin/env bash
# Smoke-test a built cabinetd binary (under qemu for ARM): the CLI of SPEC §1 and a short run
# of the demo cabinet with a /metrics scrape.
#
#   cross/smoke.sh TARGET BINARY [RUNNER ARGS...]
#   e.g. cross/smoke.sh aarch64-unknown-linux-gnu target-cross/…/cabinetd qemu-aarch64-static -L /usr/aarch64-linux-gnu
#
# Every step runs even if an earlier one failed (except when the binary cannot execute at all),
# then a summary names each failed step. Exit 0 only if all passed.
# Artifacts: target-ship/smoke-TARGET/{scrape.txt,run.log,...} (the scrape feeds
# tests/ship/dashboard_metrics_check.sh).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 1
TARGET="${1:?usage: cross/smoke.sh TARGET BINARY [RUNNER ARGS...]}"
BIN="${2:?usage: cross/smoke.sh TARGET BINARY [RUNNER ARGS...]}"
shift 2
RUNNER=("$@")
STARTUP_DEADLINE_S="${STARTUP_DEADLINE_S:-60}" # qemu user emulation starts slowly
RUN_FOR_S="${RUN_FOR_S:-3}"                    # keep the demo running a little after it is up
STOP_DEADLINE_S="${STOP_DEADLINE_S:-15}"       # SPEC: exit within 10 s of SIGTERM

OUT="$ROOT/target-ship/smoke-$TARGET"
rm -rf "$OUT"
mkdir -p "$OUT"
TMP="$(mktemp -d "${TMPDIR:-/tmp}/cabinetd-smoke.XXXXXX")"
DAEMON_PID=""
cleanup() {
  if [ -n "$DAEMON_PID" ] && kill -0 "$DAEMON_PID" 2>/dev/null; then
    kill -KILL "$DAEMON_PID" 2>/dev/null
    wait "$DAEMON_PID" 2>/dev/null
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT

FAILED=()
pass() { echo "  ok   $*"; }
fail() { echo "  FAIL $*"; FAILED+=("$1"); }
cab() { "${RUNNER[@]}" "$BIN" "$@"; }

echo "== smoke $TARGET: ${RUNNER[*]:-(native)} $BIN"
[ -x "$BIN" ] || { echo "smoke: FAILED: $BIN is not an executable file"; exit 1; }

# 1. --version: SPEC wants version, git commit and target triple.
VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
if out="$(cab --version 2>&1)"; then
  echo "$out" >"$OUT/version.txt"
  echo "       $out"
  if [[ "$out" == *"$VERSION"* ]]; then pass "--version names $VERSION"; else
    fail "--version" "does not contain the package version $VERSION: $out"; fi
  if [[ "$out" == *"$TARGET"* ]]; then pass "--version names $TARGET"; else
    fail "--version-target" "does not contain the target triple $TARGET: $out"; fi
else
  rc=$?
  echo "$out" | tail -5
  if [ "$rc" = 126 ] || [ "$rc" = 127 ]; then
    echo "smoke: FAILED: cannot execute $BIN (exit $rc) — runner: ${RUNNER[*]:-none}"
    exit 1
  fi
  fail "--version" "exit $rc"
fi

# 2. check-config on every shipped config: all must be valid (exit 0). The example names the
#    cabinet's own files (/etc/cabinetd/ca.pem, the MQTT password, …) that only an installed
#    cabinet has: its file checks belong to tests/ship/deb_install.sh, which plants them. The
#    other configs (the demo) run here as the current user, so their files are checked for it,
#    not for the packaged service user that `check-config` picks by default as root.
shopt -s nullglob
configs=(config/*.toml)
[ ${#configs[@]} -gt 0 ] || fail "check-config" "no config/*.toml in the repo"
for c in "${configs[@]}"; do
  if [ "$(basename "$c")" = cabinetd.example.toml ]; then
    how=(--no-file-checks)
  else
    how=(--as-user "$(id -un)")
  fi
  if out="$(cab check-config --config "$c" "${how[@]}" 2>&1)"; then
    pass "check-config --config $c ${how[*]}"
  else
    rc=$?
    fail "check-config:$c" "exit $rc: $(echo "$out" | head -5)"
  fi
done

# 3. check-config on an invalid file: exit 78 and FILE:LINE:COL diagnostics.
printf '[cabinet]\nid = "NOT VALID!"\n[http]\nlisten = 42\n' >"$TMP/broken.toml"
out="$(cab check-config --config "$TMP/broken.toml" 2>&1)"
rc=$?
if [ "$rc" = 78 ] && grep -q "broken.toml:[0-9]*:[0-9]*:" <<<"$out"; then
  pass "check-config on a broken file: exit 78 with FILE:LINE:COL"
else
  fail "check-config-invalid" "expected exit 78 and broken.toml:LINE:COL lines, got exit $rc: $(echo "$out" | head -3)"
fi

# 4. the demo cabinet: run, scrape /metrics, status, SIGTERM → exit 0.
free_port() {
  if command -v python3 >/dev/null; then
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
  else
    local p
    for _ in $(seq 1 50); do
      p=$((20000 + RANDOM % 40000))
      ss -Htln "sport = :$p" | grep -q . || { echo "$p"; return; }
    done
    return 1
  fi
}
if [ ! -f config/demo.toml ]; then
  fail "demo" "config/demo.toml is missing"
else
  PORT="$(free_port)"
  # The demo's simulators listen on fixed ports (e.g. the meter on 127.0.0.1:15020): a second
  # demo or smoke run on the machine would make this one fail obscurely, so say it up front.
  busy=""
  for p in $(sed -n 's/^ *listen *= *"[0-9.]*:\([0-9]*\)".*/\1/p' config/demo.toml); do
    if ss -Htln "sport = :$p" 2>/dev/null | grep -q .; then busy="$busy $p"; fi
  done
  [ -z "$busy" ] || echo "  note: ports used by config/demo.toml already in use:$busy (another demo running?)"
  mkdir -p "$TMP/state"
  cat >"$TMP/override.toml" <<EOF
# smoke test: keep state in a temp dir and the HTTP endpoint on a free loopback port
[storage]
path = "$TMP/state"

[http]
listen = "127.0.0.1:$PORT"
EOF
  cp "$TMP/override.toml" "$OUT/override.toml"
  # Not through cab(): $! must be the daemon (or qemu running it) itself, not a subshell.
  "${RUNNER[@]}" "$BIN" run --config config/demo.toml --config "$TMP/override.toml" \
    >"$OUT/run.log" 2>&1 &
  DAEMON_PID=$!
  URL="http://127.0.0.1:$PORT/metrics"
  up=no
  deadline=$(($(date +%s) + STARTUP_DEADLINE_S))
  while [ "$(date +%s)" -lt "$deadline" ]; do
    if ! kill -0 "$DAEMON_PID" 2>/dev/null; then break; fi
    if curl -fsS --max-time 2 -o "$OUT/scrape.txt" "$URL" 2>/dev/null; then up=yes; break; fi
    sleep 0.3
  done
  if [ "$up" = yes ]; then
    pass "run: $URL answered"
    # Let the demo poll/publish a few cycles, then scrape again for the artifact.
    end=$(($(date +%s) + RUN_FOR_S))
    while [ "$(date +%s)" -lt "$end" ] && kill -0 "$DAEMON_PID" 2>/dev/null; do sleep 0.5; done
    curl -fsS --max-time 5 -o "$OUT/scrape.txt" "$URL" 2>/dev/null ||
      fail "metrics-rescrape" "second scrape of $URL failed"
    if grep -q '^cabinetd_build_info{' "$OUT/scrape.txt"; then
      pass "/metrics has $(grep '^cabinetd_build_info{' "$OUT/scrape.txt")"
    else
      fail "metrics" "/metrics has no cabinetd_build_info (saved in $OUT/scrape.txt)"
    fi
    if out="$(cab status --http "127.0.0.1:$PORT" 2>&1)"; then
      echo "$out" >"$OUT/status.txt"
      pass "status --http 127.0.0.1:$PORT"
    else
      fail "status" "exit $?: $(echo "$out" | head -3)"
    fi
  elif kill -0 "$DAEMON_PID" 2>/dev/null; then
    fail "run" "$URL did not answer within ${STARTUP_DEADLINE_S}s"
  else
    wait "$DAEMON_PID"
    rc=$?
    DAEMON_PID=""
    fail "run" "daemon exited with $rc before $URL answered"
  fi

  if [ -n "$DAEMON_PID" ]; then
    kill -TERM "$DAEMON_PID"
    deadline=$(($(date +%s) + STOP_DEADLINE_S))
    while kill -0 "$DAEMON_PID" 2>/dev/null && [ "$(date +%s)" -lt "$deadline" ]; do sleep 0.2; done
    if kill -0 "$DAEMON_PID" 2>/dev/null; then
      fail "sigterm" "still running ${STOP_DEADLINE_S}s after SIGTERM (killed)"
      kill -KILL "$DAEMON_PID"
      wait "$DAEMON_PID" 2>/dev/null
    else
      wait "$DAEMON_PID"
      rc=$?
      if [ "$rc" = 0 ]; then pass "SIGTERM → exit 0"; else fail "sigterm" "exit $rc after SIGTERM (want 0)"; fi
    fi
    DAEMON_PID=""
  fi
  echo "       daemon log: $OUT/run.log (last lines below)"
  tail -5 "$OUT/run.log" | sed 's/^/       | /'
fi

if [ ${#FAILED[@]} -gt 0 ]; then
  echo "smoke $TARGET: FAILED steps: ${FAILED[*]}"
  exit 1
fi
echo "smoke $TARGET: all passed"
