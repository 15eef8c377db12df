#!/usr/bin/env bash
# systemd unit and sysusers checks (no running systemd needed):
#  1. the directives SPEC §5 and the hardening brief fix are present;
#  2. `systemd-analyze verify` prints nothing (the unit is verified with /usr/bin/cabinetd
#     replaced by a stub executable, since verify insists the binary exists; if the package is
#     installed, the installed unit is verified as is too);
#  3. `systemd-analyze security --offline=true` exposure <= MAX_EXPOSURE (default 2.5);
#  4. systemd-sysusers creates the cabinetd user in dialout (in a scratch root).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
need systemd-analyze systemd
need systemd-sysusers systemd
MAX_EXPOSURE="${MAX_EXPOSURE:-2.5}"
UNIT="$ROOT/systemd/cabinetd.service"
SYSUSERS="$ROOT/systemd/cabinetd.sysusers"
[ -f "$UNIT" ] || die "$UNIT is missing"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

say "required directives"
missing=0
for d in \
  'Type=notify' 'NotifyAccess=main' 'WatchdogSec=30s' 'Restart=on-failure' \
  'RestartPreventExitStatus=78' 'ExecReload=/bin/kill -HUP $MAINPID' \
  'ExecStart=/usr/bin/cabinetd run --config /etc/cabinetd/cabinetd.toml --config-dir /etc/cabinetd/conf.d' \
  'StateDirectory=cabinetd' 'ConfigurationDirectory=cabinetd' 'User=cabinetd' \
  'SupplementaryGroups=dialout' 'DeviceAllow=char-ttyS rw' 'DeviceAllow=char-ttyUSB rw' \
  'DeviceAllow=char-ttyACM rw' 'DeviceAllow=char-ttyAMA rw' 'DeviceAllow=char-hidraw rw' \
  'ProtectSystem=strict' 'PrivateTmp=yes' 'NoNewPrivileges=yes' \
  'RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6' 'SystemCallFilter=@system-service' \
  'CapabilityBoundingSet=' 'WantedBy=multi-user.target'; do
  if grep -qxF -- "$d" "$UNIT"; then echo "  ok   $d"; else echo "  FAIL missing line: $d"; missing=1; fi
done
[ "$missing" = 0 ] || die "directives missing from $UNIT"

say "systemd-analyze verify"
printf '#!/bin/sh\nexit 0\n' >"$TMP/cabinetd"
chmod +x "$TMP/cabinetd"
sed "s#/usr/bin/cabinetd#$TMP/cabinetd#g" "$UNIT" >"$TMP/cabinetd.service"
out="$(systemd-analyze verify "$TMP/cabinetd.service" 2>&1)" || die "verify failed: $out"
[ -z "$out" ] || die "systemd-analyze verify is not clean: $out"
echo "  ok   clean"
if [ -x /usr/bin/cabinetd ] && [ -f /usr/lib/systemd/system/cabinetd.service ]; then
  out="$(systemd-analyze verify /usr/lib/systemd/system/cabinetd.service 2>&1)" ||
    die "verify of the installed unit failed: $out"
  [ -z "$out" ] || die "verify of the installed unit is not clean: $out"
  echo "  ok   installed unit clean"
fi

say "systemd-analyze security --offline=true"
systemd-analyze security --offline=true --no-pager "$UNIT" >"$SHIP_OUT/systemd-security.txt" 2>&1 || true
EXPOSURE="$(sed -n 's/.*Overall exposure level for cabinetd.service: \([0-9.]*\).*/\1/p' \
  "$SHIP_OUT/systemd-security.txt")"
[ -n "$EXPOSURE" ] || { cat "$SHIP_OUT/systemd-security.txt"; die "no exposure level in the output"; }
grep '✗' "$SHIP_OUT/systemd-security.txt" | sed 's/  */ /g; s/^/  /' || true
echo "  exposure $EXPOSURE (limit $MAX_EXPOSURE)"
awk -v e="$EXPOSURE" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(e <= m) }' ||
  die "exposure $EXPOSURE is above $MAX_EXPOSURE"

say "systemd-sysusers (scratch root)"
[ -f "$SYSUSERS" ] || die "$SYSUSERS is missing"
mkdir -p "$TMP/root/etc"
cp /etc/passwd /etc/group "$TMP/root/etc/"
systemd-sysusers --root="$TMP/root" "$SYSUSERS" >/dev/null 2>&1 || die "systemd-sysusers rejected $SYSUSERS"
grep -q '^cabinetd:x:[0-9]*:[0-9]*:.*:/var/lib/cabinetd:/usr/sbin/nologin$' "$TMP/root/etc/passwd" ||
  die "sysusers did not create a nologin cabinetd user with home /var/lib/cabinetd"
grep -Eq '^dialout:[^:]*:[0-9]+:(.*,)?cabinetd(,.*)?$' "$TMP/root/etc/group" ||
  die "sysusers did not put cabinetd in dialout"
echo "  ok   cabinetd user, member of dialout"
say "ok (exposure $EXPOSURE)"
