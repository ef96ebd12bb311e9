#!/usr/bin/env bash
# Run smbtorture smb2 suites (by default the 13 core ones) against a fresh smbring server.
#   scripts/torture.sh [OUTDIR] [SUITE ...]
# SERVE_ARGS: further `smbring serve` options (SERVE_ARGS=--guest: guest ok on the share, and
# unknown users as guests; anonymous logons, which smb2.session.reauth2-4 use, need no flag)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-/tmp/tort/out}; shift || true
suites=${*:-"smb2.connect smb2.read smb2.rw smb2.create smb2.dir smb2.getinfo smb2.setinfo
 smb2.rename smb2.lock smb2.compound smb2.credits smb2.delete-on-close-perms smb2.sharemode"}
port=${PORT:-4488}
work=$(mktemp -d /tmp/smbring-torture.XXXXXX)
mkdir -p "$work/share" "$out"
printf 'Secret1\n' | SMBRING_PASSDB="$work/passdb" "$here/.venv/bin/smbring" user add torture --password-stdin >/dev/null
# as root the server acts as each user's Unix account and the torture user has none: it is
# mapped to root (smb.conf's username map applies before the password is checked, as in
# Samba, so root's entry in the password file carries the same password)
as_root=()
if [ "$(id -u)" = 0 ]; then
    printf 'Secret1\n' | SMBRING_PASSDB="$work/passdb" "$here/.venv/bin/smbring" user add root --password-stdin >/dev/null
    printf 'root = torture\n' >"$work/users.map"
    as_root=(--username-map "$work/users.map" --guest-account root)
fi
# shellcheck disable=SC2086
SMBRING_PASSDB="$work/passdb" "$here/.venv/bin/smbring" serve "$work/share" --share torture "${as_root[@]}" ${SERVE_ARGS:-} \
    --listen 127.0.0.1:$port --log-level ${LOGLEVEL:-warning} >"$out/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$work"' EXIT
sleep 1
cd "$here/../shared/anchors/samba" 2>/dev/null || cd /work/shared/anchors/samba
# shellcheck disable=SC2086
./torture.sh //127.0.0.1/torture torture%Secret1 -p $port --nolock -T ${TMO:-60} -o "$out" $suites
