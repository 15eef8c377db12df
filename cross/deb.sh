#!/usr/bin/env bash
# Package a binary built by cross/build.sh as a .deb (cargo-deb, no rebuild).
#
#   cross/deb.sh TARGET      → target-cross/debian/cabinetd_<version>-1_<arch>.deb (path printed)
#
# For cross targets cargo-deb's dpkg-shlibdeps reads the cross libc (libc6-*-cross) and writes
# `libc6:<arch> (>= 2.36)`; the package is rewritten to depend on plain `libc6 (>= X)` with X the
# newest GLIBC_ symbol version the binary really needs (the same readelf check as build.sh).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
die() { echo "cross/deb.sh: FAILED: $*" >&2; exit 1; }
TARGET="${1:?usage: cross/deb.sh TARGET}"
CARGO_DEB_VERSION=3.8.0
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target-cross}"
BIN="$CARGO_TARGET_DIR/$TARGET/release/cabinetd"
[ -x "$BIN" ] || die "no $BIN: run cross/build.sh $TARGET first"
cargo deb --version 2>/dev/null | grep -q "$CARGO_DEB_VERSION" ||
  cargo install cargo-deb --locked --version "=$CARGO_DEB_VERSION" >&2 || die "cargo install cargo-deb"

DEB="$(cargo deb --no-build --target "$TARGET" 2>"$CARGO_TARGET_DIR/cargo-deb-$TARGET.log" | tail -1)" ||
  { cat "$CARGO_TARGET_DIR/cargo-deb-$TARGET.log" >&2; die "cargo deb --target $TARGET"; }
[ -f "$DEB" ] || die "cargo deb did not produce a package"

GLIBC_MAX="$(readelf -V --wide "$BIN" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1)"
[ -n "$GLIBC_MAX" ] || die "no GLIBC_ version needs in $BIN"
DEPENDS="$(dpkg-deb -f "$DEB" Depends)"
FIXED="$(echo "$DEPENDS" | sed -E "s/libc6(:[a-z0-9]+)? \([^)]*\)/libc6 (>= $GLIBC_MAX)/")"
if [ "$FIXED" != "$DEPENDS" ]; then
  TMP="$(mktemp -d)"
  trap 'rm -rf "$TMP"' EXIT
  dpkg-deb -R "$DEB" "$TMP/pkg"
  sed -i "s/^Depends: .*/Depends: $FIXED/" "$TMP/pkg/DEBIAN/control"
  dpkg-deb --root-owner-group -Zxz -b "$TMP/pkg" "$DEB" >/dev/null || die "dpkg-deb -b"
fi
echo "cross/deb.sh: $DEB ($(dpkg-deb -f "$DEB" Architecture); Depends: $(dpkg-deb -f "$DEB" Depends))" >&2
echo "$DEB"
