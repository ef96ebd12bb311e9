#!/usr/bin/env bash
# Installs the Debian packages the tests use (real SMB clients, smbtorture, tevent for the
# benchmark anchor). Only as root; otherwise says what is missing and lets the tests skip.
set -u
need=()
command -v smbclient >/dev/null 2>&1 || need+=(smbclient)
command -v smbtorture >/dev/null 2>&1 || need+=(samba-testsuite)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
command -v iperf3 >/dev/null 2>&1 || need+=(iperf3)
command -v smbd >/dev/null 2>&1 || need+=(samba)
# the benchmark's smbd runs with vfs objects = io_uring, packaged in samba-vfs-modules
[ -n "$(find /usr/lib/*/samba/vfs -name io_uring.so 2>/dev/null)" ] || need+=(samba-vfs-modules)
pkg-config --exists tevent talloc 2>/dev/null || need+=(libtevent-dev libtalloc-dev)
# the Kerberos tests run a real MIT KDC on loopback: krb5kdc and kdb5_util (krb5-kdc), kadmin.local
# to make principals and keytabs (krb5-admin-server), kinit (krb5-user), and the GSSAPI headers
# the python gssapi package builds against (libkrb5-dev)
command -v krb5kdc >/dev/null 2>&1 || need+=(krb5-kdc)
command -v kadmin.local >/dev/null 2>&1 || need+=(krb5-admin-server)
command -v kinit >/dev/null 2>&1 || need+=(krb5-user)
command -v krb5-config >/dev/null 2>&1 || need+=(libkrb5-dev)
# smbring's client logs on with Kerberos to a Samba AD domain controller the tests provision
# (its schema: samba-ad-provision; its directory's modules: samba-ad-dc's samba-dsdb-modules)
[ -d /usr/share/samba/setup/ad-schema ] || need+=(samba-ad-provision)
[ -n "$(find /usr/lib/*/samba/ldb -name samba_dsdb.so 2>/dev/null)" ] || need+=(samba-ad-dc)
# previous versions of named streams are tested in a real btrfs snapshot (a loop device)
command -v mkfs.btrfs >/dev/null 2>&1 || need+=(btrfs-progs)
# CPython's own asyncio tests, which `make test-asan` runs against the ring loop: the
# distribution's Python (the one `make` prefers, scripts/python.sh) ships them apart
python=$(bash "$(dirname "$0")/python.sh")
if [ "$python" = /usr/bin/python3 ] && ! "$python" -c 'import test.test_asyncio' >/dev/null 2>&1; then
    need+=("libpython3.$("$python" -c 'import sys; print(sys.version_info[1])')-testsuite")
fi
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "system-deps: not root; missing ${need[*]} (tests that need them are skipped)" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
# keep packaged daemons (samba's smbd on port 445) from starting on install
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
echo "system-deps: installing ${need[*]}"
apt-get update -qq >/dev/null 2>&1 || true
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null 2>&1 \
    || echo "system-deps: apt-get install ${need[*]} failed (tests that need them are skipped)" >&2
exit 0
