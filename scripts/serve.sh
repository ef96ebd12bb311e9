#!/usr/bin/env bash
# make serve: share $SHARE on $LISTEN. On first use, when the password file has no user,
# create one with a random password and say so (only its NT hash is stored).
set -euo pipefail
BIN=.venv/bin
new_share=no
[ -d "$SHARE" ] || new_share=yes
mkdir -p "$SHARE"
pw=""
if [ -z "$($BIN/smbring user list 2>/dev/null)" ]; then
    pw=$($BIN/python -c 'import secrets; print(secrets.token_urlsafe(12))')
    printf '%s\n' "$pw" | $BIN/smbring user add smbring --password-stdin >/dev/null
    echo "created user 'smbring' with password '$pw' (change it: .venv/bin/smbring user add smbring)"
fi
if [ "$(id -u)" = 0 ]; then
    # as root, each user acts as its Unix account (as with smbd)
    if id smbring >/dev/null 2>&1; then
        [ "$new_share" = yes ] && chown smbring: "$SHARE"
        echo "user 'smbring' acts as the Unix account smbring (owner of $SHARE: $(stat -c %U "$SHARE"))"
    else
        # no such account: it acts as the owner of the shared directory (an smb.conf
        # `username map`, as Samba reads it)
        owner=$(stat -c %U "$SHARE")
        printf '%s = smbring\n' "$owner" > "$BIN/../serve-username.map"
        SERVE_ARGS="--username-map $BIN/../serve-username.map $SERVE_ARGS"
        echo "user 'smbring' acts as $owner, the owner of $SHARE"
        # as in Samba, the map applies before the password is checked: a logon as smbring
        # proves the password file's entry for $owner, which gets smbring's first password
        if [ -n "$pw" ]; then
            printf '%s\n' "$pw" | $BIN/smbring user add "$owner" --password-stdin >/dev/null
        elif ! $BIN/smbring user list 2>/dev/null | grep -qx "$owner"; then
            echo "  smbring's logons check the password of '$owner', which the password file lacks:" \
                 "set it with .venv/bin/smbring user add $owner" >&2
        fi
        [ "$owner" = root ] && echo "  (root: the kernel's permission checks do not apply; chown the directory to an account to change that)"
    fi
fi
host=${LISTEN%:*}; port=${LISTEN##*:}
echo "try: smbclient //$host/share -p $port -U smbring -c ls"
exec $BIN/smbring serve "$SHARE" --share share --listen "$LISTEN" $SERVE_ARGS
