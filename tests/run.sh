#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine: installs what the tests need when it is
# missing (Debian packages, Rust components, the Python peers' venv), then runs formatting, lints,
# every Rust test (unit, property and integration tests against real peers), the Python peer
# self-tests, and the shipping checks (ARM cross builds under qemu, Debian package, systemd unit,
# dashboards and alert rules). Fails loudly at the first failing step; never skips a step.
#
#   tests/run.sh            everything (what CI runs)
#   tests/run.sh --quick    skip the shipping checks (cross builds take several minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
QUICK=0
[[ "${1:-}" == "--quick" ]] && QUICK=1

t0=$SECONDS
step() { printf '\n==> [%4ds] %s\n' $((SECONDS - t0)) "$*"; }

as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

step "Debian packages (mosquitto, socat, python3-venv)"
missing=()
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
# Debian starts a system-wide mosquitto on 1883 when it can; tests use their own brokers on free
# ports, so it is harmless, but say so for the person reading the log.
pgrep -x mosquitto >/dev/null && echo "note: a system mosquitto is running; tests use their own brokers"

step "Rust components (rustfmt, clippy)"
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy

step "Python peers venv (tests/.venv from tests/requirements.txt)"
VENV=$ROOT/tests/.venv
stamp=$VENV/.requirements.sha256
want=$(sha256sum tests/requirements.txt | cut -d' ' -f1)
if [[ ! -x $VENV/bin/python || "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r tests/requirements.txt
  echo "$want" > "$stamp"
fi
export CABINETD_TEST_PYTHON=$VENV/bin/python

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, -D warnings)"
cargo clippy --workspace --all-targets --quiet -- -D warnings

step "cargo test --workspace (unit, property, integration against real peers)"
cargo test --workspace

if compgen -G "tests/peers/test_*.py" >/dev/null; then
  step "Python peer self-tests (emulators proven against independent drivers)"
  "$VENV/bin/python" -m pytest -q tests/peers
fi

if ((QUICK == 0)) && [[ -x tests/ship/all.sh ]]; then
  step "Shipping checks (cross builds + qemu, Debian package, systemd, ops assets)"
  tests/ship/all.sh
fi

step "all tests passed in $((SECONDS - t0)) s"
