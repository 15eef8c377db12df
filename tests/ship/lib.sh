# Shared helpers of tests/ship/*.sh (sourced, not run).
# shellcheck shell=bash
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SHIP_OUT="$ROOT/target-ship"
mkdir -p "$SHIP_OUT"

die() { echo "${0##*/}: FAILED: $*" >&2; exit 1; }
say() { echo "== ${0##*/}: $*"; }

# The test interpreter convention of the repo: $CABINETD_TEST_PYTHON, else tests/.venv/bin/python.
# (Only the standard library is used here.) Missing → fail, never skip.
ship_python() {
  local py="${CABINETD_TEST_PYTHON:-$ROOT/tests/.venv/bin/python}"
  [ -x "$py" ] || die "no Python interpreter at $py: set CABINETD_TEST_PYTHON or create tests/.venv"
  echo "$py"
}

# need CMD DEBIAN_PACKAGE: install the package with apt when CMD is missing (root only).
need() {
  local cmd="$1" pkg="$2"
  command -v "$cmd" >/dev/null && return 0
  [ "$(id -u)" = 0 ] || die "$cmd is missing: apt-get install -y $pkg (as root)"
  say "installing $pkg for $cmd"
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y \
    --no-install-recommends "$pkg" >"$SHIP_OUT/apt-$pkg.log" 2>&1 ||
    { tail -20 "$SHIP_OUT/apt-$pkg.log" >&2; die "apt-get install $pkg"; }
  command -v "$cmd" >/dev/null || die "$pkg installed but $cmd still missing"
}
