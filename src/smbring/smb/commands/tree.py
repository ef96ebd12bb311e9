"""TREE_CONNECT and TREE_DISCONNECT (MS-SMB2 3.3.5.7, 3.3.5.8)."""
from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from smbring.smb import wire
from smbring.smb.errors import SMBError, in_request
from smbring.smb.state import Tree
from smbring.smb.wire import Header

if TYPE_CHECKING:
    from smbring.smb.connection import Connection


def h_tree_connect(c: Connection, hdr: Header, msg: bytes, rhdr: Header, _):
    _size, flags, off, length = struct.unpack_from("<HHHH", msg, 64)
    path = wire.from_utf16(in_request(msg, off, length))
    name = path.rsplit("\\", 1)[-1].lower()
    s = c.sessions[hdr.session_id]
    if len(s.trees) >= c.limits.max_trees:
        raise SMBError(wire.STATUS_INSUFFICIENT_RESOURCES)
    if name == "ipc$":
        tree, share_type, access = Tree(None, None), wire.SHARE_TYPE_PIPE, 0x001F01FF
    else:
        share = c.shares.get(name)
        if share is None:
            raise SMBError(wire.STATUS_BAD_NETWORK_NAME)
        if s.guest and not share.guest_ok:
            raise SMBError(wire.STATUS_ACCESS_DENIED)
        if share.valid_users and s.user.rsplit("\\", 1)[-1].lower() not in share.valid_users:
            raise SMBError(wire.STATUS_ACCESS_DENIED)
        if share.encrypt and not c.cipher:
            raise SMBError(wire.STATUS_ACCESS_DENIED)  # the client cannot encrypt
        identity = None
        if c.identities is not None:     # the account the tree acts as (force user, group)
            identity = c.identities.for_share(share, s.identity)
            if identity is None:
                raise SMBError(wire.STATUS_ACCESS_DENIED)
        tree = Tree(share, c.share_fs(share, identity))
        share_type = wire.SHARE_TYPE_DISK
        access = wire.READ_ONLY_ACCESS if share.read_only else wire.FILE_ALL_ACCESS
    tid = c.next_id
    c.next_id += 1
    s.trees[tid] = tree
    rhdr.tree_id = tid
    share_flags = 0x8000 if tree.share and tree.share.encrypt else 0  # SHAREFLAG_ENCRYPT_DATA
    return struct.pack("<HBBIII", 16, share_type, 0, share_flags, 0, access), None


def h_tree_disconnect(c: Connection, hdr: Header, msg: bytes, rhdr: Header, _):
    t = c.sessions[hdr.session_id].trees.pop(hdr.tree_id, None)
    if t is None:
        raise SMBError(wire.STATUS_NETWORK_NAME_DELETED)
    c.close_opens(hdr.session_id, hdr.tree_id)
    return struct.pack("<HH", 4, 0), None
