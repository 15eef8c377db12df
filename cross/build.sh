#!/usr/bin/env bash
# Cross-build cabinetd for a cabinet computer, check it, and smoke-test it under qemu.
#
#   cross/build.sh TARGET
#     TARGET: aarch64-unknown-linux-gnu | armv7-unknown-linux-gnueabihf | x86_64-unknown-linux-gnu
#
# Steps: install what is missing (rustup target, Debian cross gcc, qemu-user-static) → release
# build into target-cross/ (own dir, so it never fights the dev build for target/) → glibc floor
# check → stripped size check → cross/smoke.sh under qemu (skipped with SMOKE=0).
#
# Environment:
#   GLIBC_FLOOR   oldest glibc of the fleet (default 2.36: Debian 12 / Raspberry Pi OS 12).
#                 The binary may not need a newer GLIBC_x.y symbol version. Debian 12's cross
#                 libc links against >= 2.34, so a floor below 2.34 (2.31 for Debian 11 / Pi OS
#                 bullseye) switches to cargo-zigbuild with TARGET.FLOOR, zig supplying the old
#                 glibc stubs and the C compiler (pinned versions installed with pip into
#                 <target dir>/zig-venv). See cross/README.md.
#   MAX_SIZE_BYTES stripped size limit (default 10 MiB).
#   SMOKE=0       build and check only.
#   CARGO_TARGET_DIR defaults to <repo>/target-cross (zigbuild route: target-cross-glibcFLOOR).
# Exit status: 0 all good; 1 a check failed (the reason is printed last); 2 usage.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

die() { echo "cross/build.sh: FAILED: $*" >&2; exit 1; }
say() { echo "== cross/build.sh: $*"; }

TARGET="${1:-}"
HOST="$(rustc -vV | sed -n 's/^host: //p')"
case "$TARGET" in
  aarch64-unknown-linux-gnu)
    GCC=aarch64-linux-gnu-gcc; AR=aarch64-linux-gnu-ar
    APT_PKGS="gcc-aarch64-linux-gnu libc6-dev-arm64-cross"
    QEMU=qemu-aarch64-static; SYSROOT=/usr/aarch64-linux-gnu ;;
  armv7-unknown-linux-gnueabihf)
    GCC=arm-linux-gnueabihf-gcc; AR=arm-linux-gnueabihf-ar
    APT_PKGS="gcc-arm-linux-gnueabihf libc6-dev-armhf-cross"
    QEMU=qemu-arm-static; SYSROOT=/usr/arm-linux-gnueabihf ;;
  "$HOST")
    GCC=""; AR=""; APT_PKGS=""; QEMU=""; SYSROOT="" ;;
  *)
    echo "usage: cross/build.sh aarch64-unknown-linux-gnu|armv7-unknown-linux-gnueabihf|$HOST" >&2
    exit 2 ;;
esac

GLIBC_FLOOR="${GLIBC_FLOOR:-2.36}"
MAX_SIZE_BYTES="${MAX_SIZE_BYTES:-10485760}"
ZIGBUILD_VERSION=0.24.1 # cargo-zigbuild on PyPI
ZIGLANG_VERSION=0.17.1  # the zig toolchain wheel it drives
version_lt() { [ "$1" != "$2" ] && [ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | head -1)" = "$1" ]; }
if version_lt "$GLIBC_FLOOR" 2.34; then
  ROUTE=zigbuild
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target-cross-glibc$GLIBC_FLOOR}"
else
  ROUTE=gcc
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target-cross}"
fi
BIN="$CARGO_TARGET_DIR/$TARGET/release/cabinetd"

# ---- 1. toolchain -------------------------------------------------------------------------
apt_install() {
  if [ "$(id -u)" != 0 ]; then
    die "missing Debian packages: $*; run as root or: sudo apt-get install -y $*"
  fi
  say "apt-get install $*"
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y \
    --no-install-recommends "$@" >"$CARGO_TARGET_DIR/apt.log" 2>&1 ||
    { tail -20 "$CARGO_TARGET_DIR/apt.log" >&2; die "apt-get install $* failed"; }
}
mkdir -p "$CARGO_TARGET_DIR"

if ! rustup target list --installed | grep -qx "$TARGET"; then
  say "rustup target add $TARGET"
  rustup target add "$TARGET" || die "rustup target add $TARGET"
fi
missing=()
if [ -n "$GCC" ] && [ "$ROUTE" = gcc ]; then
  read -r -a pkgs <<<"$APT_PKGS"
  command -v "$GCC" >/dev/null || missing+=("${pkgs[@]}")
  [ -e "$SYSROOT/lib/libc.so.6" ] || [ -e "$SYSROOT/lib/libc.so" ] || missing+=("${pkgs[@]}")
fi
if [ -n "$QEMU" ] && [ "${SMOKE:-1}" != 0 ]; then
  command -v "$QEMU" >/dev/null || missing+=(qemu-user-static)
fi
command -v readelf >/dev/null || missing+=(binutils)
if [ ${#missing[@]} -gt 0 ]; then
  # shellcheck disable=SC2046
  apt_install $(printf '%s\n' "${missing[@]}" | sort -u)
fi

if [ "$ROUTE" = zigbuild ]; then
  ZIGVENV="$CARGO_TARGET_DIR/zig-venv"
  if ! "$ZIGVENV/bin/cargo-zigbuild" --version 2>/dev/null | grep -q "$ZIGBUILD_VERSION"; then
    say "pip install cargo-zigbuild==$ZIGBUILD_VERSION ziglang==$ZIGLANG_VERSION into $ZIGVENV"
    python3 -m venv "$ZIGVENV" || die "python3 -m venv (apt-get install python3-venv)"
    "$ZIGVENV/bin/pip" install -q --disable-pip-version-check \
      "cargo-zigbuild==$ZIGBUILD_VERSION" "ziglang==$ZIGLANG_VERSION" || die "pip install cargo-zigbuild"
  fi
  export PATH="$ZIGVENV/bin:$PATH"
fi

# ring / aws-lc-sys / any cc-rs build script must compile C for the target with the cross gcc
# (on the zigbuild route, cargo-zigbuild sets CC/linker to zig itself).
if [ -n "$GCC" ] && [ "$ROUTE" = gcc ]; then
  tvar="${TARGET//-/_}"
  export "CC_${tvar}=$GCC" "AR_${tvar}=$AR"
  # Keep the linker explicit too, in case a user-level cargo config overrides ours.
  uvar="$(echo "$tvar" | tr '[:lower:]' '[:upper:]')"
  export "CARGO_TARGET_${uvar}_LINKER=$GCC"
fi

# ---- 2. build -----------------------------------------------------------------------------
t0=$(date +%s)
if [ "$ROUTE" = gcc ]; then
  say "cargo build --release --locked --target $TARGET (target dir $CARGO_TARGET_DIR)"
  cargo build --release --locked --target "$TARGET" -p cabinetd --bin cabinetd ||
    die "cargo build for $TARGET"
else
  say "cargo zigbuild --release --locked --target $TARGET.$GLIBC_FLOOR (target dir $CARGO_TARGET_DIR)"
  cargo zigbuild --release --locked --target "$TARGET.$GLIBC_FLOOR" -p cabinetd --bin cabinetd ||
    die "cargo zigbuild for $TARGET.$GLIBC_FLOOR"
fi
t1=$(date +%s)
BUILD_SECS=$((t1 - t0))
[ -x "$BIN" ] || die "no binary at $BIN after the build"

# ---- 3. glibc floor -----------------------------------------------------------------------
# Highest GLIBC_x.y symbol version the binary references (readelf -V lists version needs).
GLIBC_MAX="$(readelf -V --wide "$BIN" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' |
  sort -uV | tail -1)"
[ -n "$GLIBC_MAX" ] || die "no GLIBC_ version needs found in $BIN (static binary? wrong file?)"
INTERP="$(readelf -l "$BIN" | sed -n 's/.*Requesting program interpreter: \(.*\)]/\1/p')"
MACHINE="$(readelf -h "$BIN" | sed -n 's/^ *Machine: *//p')"

# ---- 4. size ------------------------------------------------------------------------------
SIZE="$(stat -c %s "$BIN")"
if readelf -S --wide "$BIN" | grep -q ' \.symtab '; then STRIPPED=no; else STRIPPED=yes; fi

printf '== cross/build.sh: %s (%s): build %dm%02ds, %s bytes (%.2f MB), stripped=%s, max GLIBC_%s (floor %s), %s, interpreter %s\n' \
  "$TARGET" "$ROUTE" $((BUILD_SECS / 60)) $((BUILD_SECS % 60)) "$SIZE" \
  "$(echo "$SIZE" | awk '{print $1/1048576}')" "$STRIPPED" "$GLIBC_MAX" "$GLIBC_FLOOR" \
  "$MACHINE" "${INTERP:-none}"
# Machine-readable summary for tests/ship/all.sh and the CI log.
cat >"$CARGO_TARGET_DIR/$TARGET/release/ship-summary.txt" <<EOF
target=$TARGET
route=$ROUTE
build_seconds=$BUILD_SECS
size_bytes=$SIZE
stripped=$STRIPPED
glibc_max=$GLIBC_MAX
glibc_floor=$GLIBC_FLOOR
EOF

if [ "$(printf '%s\n%s\n' "$GLIBC_MAX" "$GLIBC_FLOOR" | sort -V | tail -1)" != "$GLIBC_FLOOR" ]; then
  echo "symbols needing the newest glibc versions:" >&2
  readelf -V --wide "$BIN" | grep -o 'GLIBC_[0-9][0-9.]*' | sort -V | uniq -c | tail -5 >&2
  die "$TARGET binary needs GLIBC_$GLIBC_MAX, above the fleet floor $GLIBC_FLOOR (see cross/README.md)"
fi
[ "$STRIPPED" = yes ] || die "$BIN is not stripped (profile.release strip = true expected)"
[ "$SIZE" -le "$MAX_SIZE_BYTES" ] || die "$BIN is $SIZE bytes, above the $MAX_SIZE_BYTES limit"

# ---- 5. smoke test under qemu -------------------------------------------------------------
if [ "${SMOKE:-1}" = 0 ]; then
  say "SMOKE=0: smoke test skipped"
  exit 0
fi
if [ -n "$QEMU" ]; then
  exec "$ROOT/cross/smoke.sh" "$TARGET" "$BIN" "$QEMU" -L "$SYSROOT"
else
  exec "$ROOT/cross/smoke.sh" "$TARGET" "$BIN"
fi
