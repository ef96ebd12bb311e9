"""Apple's SMB2 extension: the AAPL create context, as Samba's vfs_fruit answers it.

macOS sends it in a CREATE early in a tree connect: a server query (command 1) asking, by a
bitmap, for the server's capabilities, the volume's and the server's model name. What
smbring offers, on shares with `vfs objects = fruit` and `fruit:aapl` on:

- server capabilities: UNIX_BASED, as Samba always says; OSX_COPYFILE where `fruit:copyfile`
  is on: a COPYCHUNK with no chunks then copies a whole file, its data and its named streams
  (commands.ioctl_copy.copyfile_steps), which Finder uses for a copy within the share. Not
  offered: READ_DIR_ATTR (directory listings with Finder information and resource fork
  sizes) and NFS_ACE (Unix modes in security descriptors), which smbring does not serve;
- volume capabilities: CASE_SENSITIVE on a `case sensitive` share;
- the model name (`fruit:model`, MacSamba by default), which Finder shows an icon for.

The reply is laid out as Samba's (check_aapl in vfs_fruit.c): the command, the request's
bitmap echoed, then each part asked for, in bitmap order. A context that is not a 24-byte
server query is refused, STATUS_INVALID_PARAMETER, as Samba refuses it.
"""
from __future__ import annotations

import struct

from smbring.smb import wire
from smbring.smb.errors import SMBError

CONTEXT_NAME = b"AAPL"
SERVER_QUERY = 1
QUERY = struct.Struct("<IIQQ")      # CommandCode, Reserved, RequestBitmap, ClientCapabilities
# RequestBitmap / ReplyBitmap
SERVER_CAPS, VOLUME_CAPS, MODEL_INFO = 0x1, 0x2, 0x4
# server capabilities
SUPPORTS_READ_DIR_ATTR, SUPPORTS_OSX_COPYFILE, UNIX_BASED, SUPPORTS_NFS_ACE = 0x1, 0x2, 0x4, 0x8
# volume capabilities
SUPPORT_RESOLVE_ID, CASE_SENSITIVE, FULL_SYNC = 0x1, 0x2, 0x4


def answer(data: bytes, copyfile: bool, case_sensitive: bool, model: str) -> tuple[bytes, bool]:
    """The AAPL context's reply to a server query, and whether it offered copyfile."""
    if len(data) != QUERY.size:
        raise SMBError(wire.STATUS_INVALID_PARAMETER)
    command, _reserved, bitmap, _client_caps = QUERY.unpack(data)
    if command != SERVER_QUERY:
        raise SMBError(wire.STATUS_INVALID_PARAMETER)
    reply = struct.pack("<IIQ", SERVER_QUERY, 0, bitmap)
    offered = False
    if bitmap & SERVER_CAPS:
        offered = copyfile
        reply += struct.pack("<Q", UNIX_BASED | (SUPPORTS_OSX_COPYFILE if copyfile else 0))
    if bitmap & VOLUME_CAPS:
        reply += struct.pack("<Q", CASE_SENSITIVE if case_sensitive else 0)
    if bitmap & MODEL_INFO:
        name = model.encode("utf-16-le")
        reply += struct.pack("<II", 0, len(name)) + name
    return reply, offered
