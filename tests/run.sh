#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine: installs what the tests need when it is
# missing (Debian packages, Rust components, the Python peers' venv), then runs formatting, lints,
# every Rust test (unit, property and integration tests against real peers), the Python peer
# self-tests, and the shipping checks (ARM cross builds under qemu, Debian package, systemd unit,
# dashboards and alert rules). Nothing is skipped: a missing tool is installed or fails the run.
#
#   tests/run.sh            everything (what CI runs)
#   tests/run.sh --quick    skip the shipping checks (cross builds take several minutes)
#
# Each check runs even when an earlier one failed, so one log shows every failure; the run ends
# with a one-screen summary (step, time, result, test counts) and exits 1 if any step failed.
# Setup steps (installs) stop the run at once. Every step's output is also kept in
# target/test-logs/STEP.log. Daemons started by the tests log to their own temp directories;
# a failing test prints its daemon's log, a passing one prints nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
QUICK=0
[[ "${1:-}" == "--quick" ]] && QUICK=1
LOG_DIR=$ROOT/target/test-logs
mkdir -p "$LOG_DIR"

t0=$SECONDS
NAMES=() TIMES=() RESULTS=() FAILED=()
# step NAME COMMAND...: a check; its failure is recorded and the run goes on.
step() {
  local name="$1" start=$SECONDS rc=0
  shift
  printf '\n==> [%4ds] %s: %s\n' $((SECONDS - t0)) "$name" "$*"
  "$@" 2>&1 | tee "$LOG_DIR/$name.log" || rc=$?
  NAMES+=("$name")
  TIMES+=($((SECONDS - start)))
  counts "$LOG_DIR/$name.log"
  if ((rc == 0)); then
    RESULTS+=("ok$COUNTS")
  else
    RESULTS+=("FAILED (exit $rc)$COUNTS")
    FAILED+=("$name")
    printf '\n!!! %s FAILED (exit %d); the run goes on, and will fail (log: %s)\n' \
      "$name" "$rc" "$LOG_DIR/$name.log"
  fi
}
# setup NAME COMMAND...: an install; without it nothing can run, so a failure stops the run.
setup() {
  local name="$1" start=$SECONDS
  shift
  printf '\n==> [%4ds] %s\n' $((SECONDS - t0)) "$name"
  if ! "$@"; then
    printf '\n!!! setup step "%s" FAILED: nothing else can run\n' "$name"
    exit 1
  fi
  NAMES+=("$name")
  TIMES+=($((SECONDS - start)))
  RESULTS+=(ok)
}
# The test counts a step's log reports (cargo test's and pytest's closing lines) into COUNTS,
# e.g. " (812 passed, 0 failed, 3 ignored)", and the run's totals.
PASSED=0 FAILED_TESTS=0 COUNTS=
counts() {
  local p f i
  COUNTS=
  read -r p f i < <(awk '
    /^test result: / { for (k = 1; k <= NF; k++) {
        if ($(k+1) ~ /^passed;?$/) p += $k; if ($(k+1) ~ /^failed;?$/) f += $k
        if ($(k+1) ~ /^ignored;?$/) i += $k } ; seen = 1 }
    /^=+ .* in [0-9.]+s/ || /^[0-9]+ (passed|failed)/ { for (k = 1; k <= NF; k++) {
        if ($(k+1) ~ /^passed,?$/) p += $k; if ($(k+1) ~ /^failed,?$/) f += $k } ; seen = 1 }
    END { if (seen) print p + 0, f + 0, i + 0; else print "- - -" }' "$1")
  [[ $p == - ]] && return 0
  PASSED=$((PASSED + p))
  FAILED_TESTS=$((FAILED_TESTS + f))
  COUNTS=" ($p passed, $f failed"
  if ((i > 0)); then COUNTS+=", $i ignored"; fi
  COUNTS+=")"
}

as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

debian_packages() {
  local missing=()
  command -v mosquitto >/dev/null 2>&1 || [[ -x /usr/sbin/mosquitto ]] || missing+=(mosquitto)
  command -v mosquitto_sub >/dev/null 2>&1 || missing+=(mosquitto-clients)
  command -v socat >/dev/null 2>&1 || missing+=(socat)
  command -v curl >/dev/null 2>&1 || missing+=(curl)
  # openssl: the key files of `cabinetd key generate` are checked to be readable by OpenSSL.
  command -v openssl >/dev/null 2>&1 || missing+=(openssl)
  python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
  # ONVIF: the ipycam peer runs in a private network namespace (unshare, ip).
  command -v ip >/dev/null 2>&1 || [[ -x /usr/sbin/ip ]] || missing+=(iproute2)
  command -v unshare >/dev/null 2>&1 || missing+=(util-linux)
  if ((${#missing[@]})); then
    echo "installing: ${missing[*]}"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
  # Debian starts a system-wide mosquitto on 1883 when it can; tests use their own brokers on
  # free ports, so it is harmless, but say so for the person reading the log.
  if pgrep -x mosquitto >/dev/null; then echo "note: a system mosquitto is running; tests use their own brokers"; fi
}

rust_components() {
  rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
  rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
}

VENV=$ROOT/tests/.venv
python_venv() {
  local stamp=$VENV/.requirements.sha256 want
  want=$(sha256sum tests/requirements.txt | cut -d' ' -f1)
  if [[ ! -x $VENV/bin/python || "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check -r tests/requirements.txt
    echo "$want" >"$stamp"
  fi
}

setup "Debian packages (mosquitto, socat, python3-venv, …)" debian_packages
setup "Rust components (rustfmt, clippy)" rust_components
setup "Python peers venv (tests/.venv from tests/requirements.txt)" python_venv
export CABINETD_TEST_PYTHON=$VENV/bin/python

step fmt cargo fmt --all -- --check
step clippy cargo clippy --workspace --all-targets --quiet -- -D warnings
# --no-fail-fast: every test binary runs even after one failed (the summary counts them all).
# --quiet: one dot per passing test; a failing test's name, output and its daemon's log are
# printed in full, and each binary's "test result:" line stays.
step cargo-test cargo test --workspace --no-fail-fast -- --quiet
if compgen -G "tests/peers/test_*.py" >/dev/null; then
  step python-peers "$VENV/bin/python" -m pytest -q tests/peers
fi
if ((QUICK == 0)); then
  step shipping tests/ship/all.sh
fi

echo
echo "== tests/run.sh summary (each step's output: $LOG_DIR/STEP.log)"
for i in "${!NAMES[@]}"; do
  printf '   %-58s %5ds  %s\n' "${NAMES[$i]}" "${TIMES[$i]}" "${RESULTS[$i]}"
done
((QUICK == 0)) || echo "   (--quick: shipping checks not run)"
if ((${#FAILED[@]})); then
  echo "== FAILED: ${FAILED[*]} — after $((SECONDS - t0)) s"
  echo "tests: $PASSED passed, $FAILED_TESTS failed"
  exit 1
fi
echo "== all steps passed in $((SECONDS - t0)) s"
echo "tests: $PASSED passed, $FAILED_TESTS failed"
