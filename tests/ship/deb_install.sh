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
#
# What it leaves on the host: nothing. The package's purge keeps the `cabinetd` system user
# (Debian practice); when this test created it (no such user before), it deletes it at the end.
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
# Files an admin provides, which check-config wants to see readable by the service user.
PROVISIONED=(/etc/cabinetd/secrets/mqtt /etc/cabinetd/secrets/cam-darcy /etc/cabinetd/ca.pem
  /etc/cabinetd/tls/cabinet.pem /etc/cabinetd/tls/cabinet.key)
DROPIN=/etc/cabinetd/conf.d/zz-ship-test.toml
unprovision() {
  rm -f "${PROVISIONED[@]}" "$DROPIN"
  [ ! -d /etc/cabinetd/tls ] || rmdir --ignore-fail-on-non-empty /etc/cabinetd/tls
}
# The cabinetd user and group exist before the test (a real install) or are the test's own.
if getent passwd cabinetd >/dev/null; then USER_BEFORE=yes; else USER_BEFORE=no; fi
remove_test_user() {
  if [ "$USER_BEFORE" = no ] && getent passwd cabinetd >/dev/null; then
    userdel cabinetd
  fi
  if [ "$USER_BEFORE" = no ] && getent group cabinetd >/dev/null; then
    groupdel cabinetd
  fi
}
cleanup() {
  unprovision
  purge_if_installed
  # What the test itself planted and purge keeps on purpose (admin secrets).
  rm -f /etc/cabinetd/secrets/test-secret /etc/cabinetd/secrets/cam-darcy
  for d in /etc/cabinetd/secrets /etc/cabinetd; do [ ! -d "$d" ] || rmdir --ignore-fail-on-non-empty "$d"; done
  remove_test_user
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
# Man pages (cargo-deb gzips them) and completions, generated from the CLI (debian/, kept
# current by tests/cli_docs.rs): one page per subcommand.
for page in debian/man/*.1; do
  f="/usr/share/man/man1/$(basename "$page")"
  check "man page $f(.gz) installed" bash -c "[ -f '$f.gz' ] || [ -f '$f' ]"
done
check "bash completion installed" test -f /usr/share/bash-completion/completions/cabinetd
check "zsh completion installed" test -f /usr/share/zsh/vendor-completions/_cabinetd
check "fish completion installed" test -f /usr/share/fish/vendor_completions.d/cabinetd.fish
check "bash completion loads (bash -n)" bash -n /usr/share/bash-completion/completions/cabinetd
check "docs/protocol.md installed in /usr/share/doc/cabinetd" \
  bash -c '[ -f /usr/share/doc/cabinetd/protocol.md ] || [ -f /usr/share/doc/cabinetd/protocol.md.gz ]'
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
# Fresh from the package, the files the example names are not there yet: check-config (as the
# service user) names each at its FILE:LINE:COL and exits 78, as `run` would.
rc=0
out="$(runuser -u cabinetd -- "${EXEC_ARGS[@]}" 2>&1)" || rc=$?
echo "$out" | sed 's/^/    check-config| /'
check "fresh install: check-config exits 78 for the files the example names" test "$rc" = 78
for key in uplink.password_file uplink.ca_file uplink.cert_file uplink.key_file \
  'camera\[cam-darcy\].password_file'; do
  check "fresh install: check-config names $key" \
    grep -Eq "^$CONF:[0-9]+:[0-9]+: $key \"[^\"]+\" does not exist$" <<<"$out"
done
for line in 'modbus\[heat-sensor\].address /dev/ttyUSB0' 'dali\[bus-a\].port /dev/ttyAMA0'; do
  read -r key dev <<<"$line"
  check "fresh install: check-config names $key (unless $dev exists here)" \
    bash -c '[ -e "$1" ] || grep -Eq "^$2:[0-9]+:[0-9]+: $3 \"$1\" does not exist$" <<<"$4"' _ "$dev" "$CONF" "$key" "$out"
done
check "fresh install: files checked as user cabinetd" grep -q "checked as user cabinetd" <<<"$out"
check "fresh install: the state directory is left to systemd (StateDirectory=)" \
  grep -q 'storage.path "/var/lib/cabinetd" does not exist here: not checked' <<<"$out"

# As an admin would: secrets root:cabinetd 0640 in secrets/, certificates readable. The serial
# lines of the example do not exist on a build host: a drop-in gives the same entries on
# /dev/null and /dev/zero (character devices every user may open).
install -d -m 0755 /etc/cabinetd/tls
# Password files are read as `run` reads them (one line, not empty).
for f in /etc/cabinetd/secrets/mqtt /etc/cabinetd/secrets/cam-darcy; do
  printf 'ship-test-only\n' | install -m 0640 -g cabinetd /dev/stdin "$f"
done
install -m 0640 -g cabinetd /dev/null /etc/cabinetd/tls/cabinet.key
install -m 0644 /dev/null /etc/cabinetd/ca.pem
install -m 0644 /dev/null /etc/cabinetd/tls/cabinet.pem
sed -e 's#^address = "/dev/ttyUSB0"#address = "/dev/null"#' -e 's#^port = "/dev/ttyAMA0"#port = "/dev/zero"#' \
  config/cabinetd.example.toml >"$DROPIN"
if out="$(runuser -u cabinetd -- "${EXEC_ARGS[@]}" 2>&1)"; then
  echo "  ok   unit's ExecStart as check-config, user cabinetd: $out"
else
  echo "  FAIL unit's ExecStart as check-config, user cabinetd: ${EXEC_ARGS[*]}: $out"
  FAILS=$((FAILS + 1))
fi
# As root (the technician's sudo), check-config checks for the service user, not for root.
checks_as_service_user() { "${EXEC_ARGS[@]}" 2>&1 | grep -q 'checked as user cabinetd'; }
check "as root, check-config checks the files as user cabinetd" checks_as_service_user
chmod 0600 /etc/cabinetd/secrets/mqtt
rc=0
out="$("${EXEC_ARGS[@]}" 2>&1)" || rc=$?
check "a secret only root may read: exit 78" test "$rc" = 78
check "a secret only root may read: named, with the user" \
  grep -q 'uplink.password_file "/etc/cabinetd/secrets/mqtt" is not readable by user cabinetd' <<<"$out"
chmod 0644 /etc/cabinetd/secrets/mqtt
out="$("${EXEC_ARGS[@]}" 2>&1)" || true
check "a world-readable secret: a warning" \
  grep -q 'warning: uplink.password_file "/etc/cabinetd/secrets/mqtt" is readable by every user' <<<"$out"
unprovision

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
check "man page gone after remove" bash -c '! ls /usr/share/man/man1/cabinetd.1* >/dev/null 2>&1'
check "bash completion gone after remove" test ! -e /usr/share/bash-completion/completions/cabinetd
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
if [ "$USER_BEFORE" = no ]; then
  remove_test_user
  check "the cabinetd user and group this test created are gone (purge keeps system users)" \
    bash -c '! getent passwd cabinetd && ! getent group cabinetd'
fi

[ "$FAILS" = 0 ] || die "$FAILS check(s) failed"
say "ok"
