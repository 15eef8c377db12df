#!/usr/bin/env bash
# Build the host (amd64) .deb with cargo-deb, install it on THIS machine with dpkg, check what it
# did, upgrade over itself, remove, purge. Root only. Safe to run repeatedly: an installed
# cabinetd package is purged first and again at the end, whatever happens.
#
#   tests/ship/deb_install.sh            build (cross/build.sh HOST, no smoke) + package + test
#   DEB=path/to/cabinetd_*.deb tests/ship/deb_install.sh   test a given package
#
# No systemd runs as PID 1 here: the unit is enabled (symlink) but never started; the service
# sandbox itself is checked by tests/ship/systemd_checks.sh.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
CARGO_DEB_VERSION=3.8.0
[ "$(id -u)" = 0 ] || die "must run as root (dpkg -i on this machine)"
need dpkg dpkg
need deb-systemd-helper init-system-helpers

UNIT=/usr/lib/systemd/system/cabinetd.service
CONF=/etc/cabinetd/cabinetd.toml

# dpkg takes the frontend lock; other jobs on the machine may hold it for a while.
dpkg_locked() {
  local deadline=$(($(date +%s) + 600)) out rc
  while :; do
    rc=0
    out="$(dpkg "$@" 2>&1)" || rc=$?
    if [ "$rc" != 0 ] && grep -q "lock" <<<"$out" && [ "$(date +%s)" -lt "$deadline" ]; then
      sleep 2
      continue
    fi
    echo "$out" | sed 's/^/    dpkg| /'
    return "$rc"
  done
}
purge_if_installed() {
  if dpkg-query -W -f='${db:Status-Status}' cabinetd 2>/dev/null | grep -qv '^not-installed$'; then
    dpkg_locked --purge cabinetd >/dev/null || true
  fi
}
cleanup() {
  purge_if_installed
  # What the test itself planted and purge keeps on purpose (admin secrets).
  rm -f /etc/cabinetd/secrets/test-secret /etc/cabinetd/secrets/cam-darcy
  for d in /etc/cabinetd/secrets /etc/cabinetd; do [ ! -d "$d" ] || rmdir --ignore-fail-on-non-empty "$d"; done
}

FAILS=0
check() { # check DESCRIPTION COMMAND...
  local what="$1"
  shift
  if "$@" >/dev/null 2>&1; then echo "  ok   $what"; else echo "  FAIL $what"; FAILS=$((FAILS + 1)); fi
}

# ---- package ------------------------------------------------------------------------------
HOST="$(rustc -vV | sed -n 's/^host: //p')"
if [ -z "${DEB:-}" ]; then
  if ! cargo deb --version 2>/dev/null | grep -q "$CARGO_DEB_VERSION"; then
    say "cargo install cargo-deb --locked --version =$CARGO_DEB_VERSION"
    cargo install cargo-deb --locked --version "=$CARGO_DEB_VERSION" || die "cargo install cargo-deb"
  fi
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target-cross}"
  SMOKE=0 "$ROOT/cross/build.sh" "$HOST" || die "host release build"
  say "cargo deb --no-build --target $HOST"
  DEB="$(cargo deb --no-build --target "$HOST" 2>"$SHIP_OUT/cargo-deb.log" | tail -1)" ||
    { cat "$SHIP_OUT/cargo-deb.log" >&2; die "cargo deb"; }
fi
[ -f "$DEB" ] || die "no package at $DEB"
say "package $DEB"
dpkg-deb -I "$DEB" | sed -n 's/^ \(Package\|Version\|Architecture\|Depends\):/    \1:/p'

# ---- install ------------------------------------------------------------------------------
if dpkg-query -W -f='${db:Status-Status}' cabinetd 2>/dev/null | grep -qv '^not-installed$'; then
  say "a cabinetd package is installed already: purging it first"
fi
cleanup
trap cleanup EXIT
say "dpkg -i (fresh install)"
dpkg_locked -i "$DEB" || die "dpkg -i $DEB"

check "user cabinetd exists, no login shell, home /var/lib/cabinetd" \
  bash -c 'getent passwd cabinetd | grep -Eq "^cabinetd:x:[0-9]+:[0-9]+:.*:/var/lib/cabinetd:/usr/sbin/nologin$"'
check "cabinetd is a system user (uid < 1000)" bash -c '[ "$(id -u cabinetd)" -lt 1000 ]'
check "cabinetd is in dialout" bash -c 'id -nG cabinetd | tr " " "\n" | grep -qx dialout'
check "/usr/bin/cabinetd runs (--version)" /usr/bin/cabinetd --version
check "unit installed as $UNIT, identical to systemd/cabinetd.service" cmp "$UNIT" systemd/cabinetd.service
check "unit enabled (multi-user.target.wants symlink)" \
  test -L /etc/systemd/system/multi-user.target.wants/cabinetd.service
check "unit verifies clean where installed" bash -c "[ -z \"\$(systemd-analyze verify $UNIT 2>&1)\" ]"
check "sysusers.d entry installed" test -f /usr/lib/sysusers.d/cabinetd.conf
check "$CONF installed from config/cabinetd.example.toml" cmp "$CONF" config/cabinetd.example.toml
check "$CONF is a dpkg conffile" bash -c "dpkg-query -W -f='\${Conffiles}' cabinetd | grep -q ' $CONF '"
check "/etc/cabinetd/conf.d exists, root 0755" \
  bash -c '[ "$(stat -c %U:%G:%a /etc/cabinetd/conf.d)" = root:root:755 ]'
check "/etc/cabinetd/secrets exists, root:cabinetd 0750" \
  bash -c '[ "$(stat -c %U:%G:%a /etc/cabinetd/secrets)" = root:cabinetd:750 ]'
check "state dir not created by the package (systemd StateDirectory= owns it)" test ! -e /var/lib/cabinetd
# The unit's own command line, with `run` → `check-config`, as the service user: the CLI accepts
# its flags (--config-dir) and the shipped config is readable by cabinetd and valid.
EXEC="$(sed -n 's/^ExecStart=//p' "$UNIT")"
read -r -a EXEC_ARGS <<<"$EXEC"
[ "${EXEC_ARGS[1]:-}" = run ] || die "ExecStart of $UNIT is not '/usr/bin/cabinetd run …': $EXEC"
EXEC_ARGS[1]=check-config
# check-config checks the files a configuration names: plant the camera password file the
# shipped config names, as the admin would (readable by cabinetd only).
printf 'example-only\n' | install -m 0640 -g cabinetd /dev/stdin /etc/cabinetd/secrets/cam-darcy
if out="$(runuser -u cabinetd -- "${EXEC_ARGS[@]}" 2>&1)"; then
  echo "  ok   unit's ExecStart as check-config, user cabinetd: $out"
else
  echo "  FAIL unit's ExecStart as check-config, user cabinetd: ${EXEC_ARGS[*]}: $out"
  FAILS=$((FAILS + 1))
fi

# ---- reinstall over itself: local config edits and admin state survive --------------------
echo "# local edit" >>"$CONF"
install -d -o cabinetd -g cabinetd -m 0750 /var/lib/cabinetd # as systemd would at first start
echo outbox >/var/lib/cabinetd/db
install -m 0640 -g cabinetd /dev/null /etc/cabinetd/secrets/test-secret
chmod 0710 /etc/cabinetd/secrets
say "dpkg -i again (upgrade path)"
dpkg_locked -i "$DEB" || die "dpkg -i over the installed package"
check "edited conffile kept on upgrade" grep -q '^# local edit$' "$CONF"
check "admin's secrets/ mode kept on upgrade" bash -c '[ "$(stat -c %a /etc/cabinetd/secrets)" = 710 ]'
check "state kept on upgrade" test -f /var/lib/cabinetd/db

# ---- remove, then purge -------------------------------------------------------------------
say "dpkg --remove"
dpkg_locked --remove cabinetd || die "dpkg --remove"
check "binary gone after remove" test ! -e /usr/bin/cabinetd
check "unit gone after remove" test ! -e "$UNIT"
check "config kept after remove" test -f "$CONF"
check "state kept after remove" test -f /var/lib/cabinetd/db
say "dpkg --purge"
dpkg_locked --purge cabinetd || die "dpkg --purge"
check "config gone after purge" test ! -e "$CONF"
check "conf.d gone after purge" test ! -e /etc/cabinetd/conf.d
check "state gone after purge" test ! -e /var/lib/cabinetd
check "enable symlink gone after purge" test ! -L /etc/systemd/system/multi-user.target.wants/cabinetd.service
check "admin secret files survive purge" test -f /etc/cabinetd/secrets/test-secret
check "package fully gone" bash -c "! dpkg-query -W -f='\${db:Status-Status}' cabinetd 2>/dev/null | grep -qv '^not-installed$'"

[ "$FAILS" = 0 ] || die "$FAILS check(s) failed"
say "ok"
