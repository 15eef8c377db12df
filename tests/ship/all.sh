#!/usr/bin/env bash
# The shipping checks CI runs (called by tests/run.sh). Every step runs even when an earlier one
# failed, so one CI log shows everything; the summary lists each step's status and time, and the
# script exits 1 if any failed.
#
#   1. ops assets        tests/ship/ops_checks.sh (promtool check/test rules, dashboards)
#   2. systemd unit      tests/ship/systemd_checks.sh (verify, security exposure <= 2.5, sysusers)
#   3. aarch64           cross/build.sh aarch64-unknown-linux-gnu (build, glibc, size, qemu smoke)
#   4. armv7             cross/build.sh armv7-unknown-linux-gnueabihf (same)
#   5. arm packages      cross/deb.sh for both (arm64, armhf .deb from the binaries above)
#   6. amd64 package     tests/ship/deb_install.sh (build, dpkg -i, checks, upgrade, purge) — root
#   7. sandbox           tests/ship/sandbox_check.sh (host binary under strace vs the unit's
#                        filters; READY=1 / WATCHDOG=1 / SIGTERM contract)
#   8. metric names      tests/ship/dashboard_metrics_check.sh on the aarch64 smoke scrape
#
# Needs root (apt-get for missing tools, dpkg -i). Runs on a Debian 12 x86_64 host.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT" || exit 1
mkdir -p target-ship
LOG_DIR="$ROOT/target-ship/logs"
mkdir -p "$LOG_DIR"

NAMES=() STATUS=() TIMES=()
step() { # step NAME COMMAND...
  local name="$1" t0 rc
  shift
  printf '\n==> tests/ship/all.sh: %s: %s\n' "$name" "$*"
  t0=$(date +%s)
  "$@" 2>&1 | tee "$LOG_DIR/$name.log"
  rc=${PIPESTATUS[0]}
  NAMES+=("$name")
  TIMES+=($(($(date +%s) - t0)))
  if [ "$rc" = 0 ]; then STATUS+=(ok); else STATUS+=("FAILED($rc)"); fi
}

step ops tests/ship/ops_checks.sh
step systemd tests/ship/systemd_checks.sh
step aarch64 cross/build.sh aarch64-unknown-linux-gnu
step armv7 cross/build.sh armv7-unknown-linux-gnueabihf
step deb-arm64 cross/deb.sh aarch64-unknown-linux-gnu
step deb-armhf cross/deb.sh armv7-unknown-linux-gnueabihf
step deb-amd64 tests/ship/deb_install.sh
step sandbox tests/ship/sandbox_check.sh
step metrics tests/ship/dashboard_metrics_check.sh target-ship/smoke-aarch64-unknown-linux-gnu/scrape.txt

echo
echo "== tests/ship/all.sh summary (logs in $LOG_DIR)"
failed=0
for i in "${!NAMES[@]}"; do
  printf '   %-10s %-11s %4ds\n' "${NAMES[$i]}" "${STATUS[$i]}" "${TIMES[$i]}"
  [ "${STATUS[$i]}" = ok ] || failed=1
done
for f in target-cross/*/release/ship-summary.txt; do
  [ -f "$f" ] || continue
  # shellcheck disable=SC1090,SC2154 # the summary file defines target, build_seconds, …
  (source "$f" && printf '   %-32s build %4ds  %8s bytes  GLIBC_%s (floor %s)\n' \
    "$target" "$build_seconds" "$size_bytes" "$glibc_max" "$glibc_floor")
done
if [ "$failed" != 0 ]; then
  echo "tests/ship/all.sh: FAILED (see the steps above)"
  exit 1
fi
echo "tests/ship/all.sh: all shipping checks passed"
