"""MS-DFS roots, as Samba serves them (`msdfs root = yes` on a share, `host msdfs` on in
[global]): a symbolic link in the share whose target reads "msdfs:server\\share" (or several,
comma-separated) is a DFS link, and a client that reaches it is referred to those shares.

- NEGOTIATE announces DFS (SMB2_GLOBAL_CAP_DFS) with `host msdfs`; a tree connect to an
  msdfs root says it is one (SMB2_SHAREFLAG_DFS | DFS_ROOT, SMB2_SHARE_CAP_DFS).
- A CREATE a client marks as a DFS operation (SMB2_FLAGS_DFS_OPERATIONS) names its file by its
  DFS path, "server\\share\\dir\\file": the server and share are taken off. One whose path
  reaches a DFS link (the link itself, or below it) is answered STATUS_PATH_NOT_COVERED.
- FSCTL_DFS_GET_REFERRALS (MS-DFSC) answers a path "\\server\\share\\link\\..." with a
  referral to each of the link's targets (version 2, 3 or 4, as the client can take), and
  "\\server\\share" itself (an msdfs root) with a referral to the share; anything else is
  STATUS_NOT_FOUND (no DFS there: the client goes on without).

A link is looked up as the session's account, in the share it names, case-insensitively; its
targets are only ever sent to the client (the server does not follow them)."""
from __future__ import annotations

import logging
import struct

from smbring.smb import wire
from smbring.smb.errors import SMBError

log = logging.getLogger("smbring.smb")

STATUS_PATH_NOT_COVERED = 0xC0000257
STATUS_NOT_FOUND = 0xC0000225
REFERRAL_TTL = 300                      # seconds a client may keep a referral (Samba's default)
SERVER_TYPE_NON_ROOT, SERVER_TYPE_ROOT = 0x0, 0x1
REFERRAL_SERVERS, STORAGE_SERVERS = 0x1, 0x2      # ReferralHeaderFlags (MS-DFSC 2.2.4)
MAX_TARGETS = 32                        # targets of one link sent at most


def local_name(name: str, share: str) -> str:
    """The share-relative name of a DFS operation's "server\\share\\path" (as the client sends
    it, maybe with leading backslashes); a name that does not start with this share's
    server and share is taken as it is (as Samba takes one)."""
    parts = name.lstrip("\\").split("\\", 2)
    if len(parts) >= 2 and parts[1].lower() == share.lower():
        return parts[2] if len(parts) == 3 else ""
    return name


def check_not_covered(fs, parts: list[str]) -> None:
    """STATUS_PATH_NOT_COVERED where `parts` reach a DFS link (FileSystem.dfs_link)."""
    if parts and fs.dfs_link(parts) is not None:
        raise SMBError(STATUS_PATH_NOT_COVERED)


def referrals(request: bytes, max_out: int, share_tree) -> bytes:
    """FSCTL_DFS_GET_REFERRALS' answer (RESP_GET_DFS_REFERRAL) to REQ_GET_DFS_REFERRAL.
    `share_tree(name)`: the share named so as the session would reach it by a tree connect
    (its files as the session's account) if it is an msdfs root the session may reach, else
    None."""
    if len(request) < 4:
        raise SMBError(wire.STATUS_INVALID_PARAMETER)
    level = struct.unpack_from("<H", request)[0]
    try:
        path = bytes(request[2:]).decode("utf-16-le").split("\0", 1)[0]
    except UnicodeDecodeError:
        raise SMBError(wire.STATUS_INVALID_PARAMETER) from None
    log.debug("DFS referral asked for %r (level %d)", path, level)
    components = [p for p in path.split("\\") if p]
    if len(components) < 2:
        raise SMBError(STATUS_NOT_FOUND)
    server, share, rest = components[0], components[1], components[2:]
    tree = share_tree(share)
    if tree is None:
        raise SMBError(STATUS_NOT_FOUND)
    if not rest:        # the root itself: the share is its own target
        consumed = f"\\{server}\\{share}"
        targets, server_type, flags = [f"\\{server}\\{share}"], SERVER_TYPE_ROOT, REFERRAL_SERVERS | STORAGE_SERVERS
    else:
        link = tree.fs.dfs_link(rest)
        if link is None:
            raise SMBError(STATUS_NOT_FOUND)
        count, target_list = link
        consumed = "\\" + "\\".join([server, share] + rest[:count])
        targets = ["\\" + t.strip().lstrip("\\").replace("/", "\\") for t in target_list.split(",") if t.strip()]
        targets = targets[:MAX_TARGETS]
        if not targets:
            raise SMBError(STATUS_NOT_FOUND)
        server_type, flags = SERVER_TYPE_NON_ROOT, STORAGE_SERVERS
    out = _answer(min(max(level, 2), 4), consumed, targets, server_type, flags)
    if len(out) > max_out:
        raise SMBError(wire.STATUS_BUFFER_TOO_SMALL)
    return out


def _answer(version: int, consumed: str, targets: list[str], server_type: int, flags: int) -> bytes:
    """RESP_GET_DFS_REFERRAL: PathConsumed (bytes of UTF-16), the referrals (version 2, or 3
    and 4, which share a layout), then their strings, each offset counted from its own
    referral's start."""
    size = 22 if version == 2 else 34
    entries_end = len(targets) * size
    strings, offsets = b"", {}

    def place(text: str) -> int:
        nonlocal strings
        if text not in offsets:
            offsets[text] = entries_end + len(strings)
            strings += text.encode("utf-16-le") + b"\0\0"
        return offsets[text]

    entries = b""
    for i, target in enumerate(targets):
        start = i * size
        path_at, target_at = place(consumed) - start, place(target) - start
        if version == 2:    # version, size, server type, flags, proximity, TTL, three offsets
            entries += struct.pack("<HHHHIIHHH", 2, size, server_type, 0, 0, REFERRAL_TTL, path_at, path_at,
                                   target_at)
        else:               # ... TTL, three offsets, ServiceSiteGuid (none)
            entries += struct.pack("<HHHHIHHH16s", version, size, server_type, 0, REFERRAL_TTL, path_at, path_at,
                                   target_at, bytes(16))
    head = struct.pack("<HHI", len(consumed.encode("utf-16-le")), len(targets), flags)
    return head + entries + strings
