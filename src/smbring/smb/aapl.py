"""Apple's SMB2 extension: the AAPL create context, as Samba's vfs_fruit answers it.

macOS sends it in a CREATE early in a tree connect: a server query (command 1) asking, by a
bitmap, for the server's capabilities, the volume's and the server's model name. What
smbring offers, on shares with `vfs objects = fruit` and `fruit:aapl` on:

- server capabilities: UNIX_BASED, as Samba always says; OSX_COPYFILE where `fruit:copyfile`
  is on: a COPYCHUNK with no chunks then copies a whole file, its data and its named streams
  (commands.ioctl_copy.copyfile_steps), which Finder uses for a copy within the share;
  READ_DIR_ATTR where the client asks for it: that tree's FileIdBothDirectoryInformation
  listings then carry, in place of the EA size and the short name, each entry's maximal
  access, its resource fork's size, its Finder information and its Unix mode (`entry_fields`),
  so Finder need not open every file for them; NFS_ACE where `fruit:nfs_aces` is on (the
  default): that tree's security descriptors then show the file's Unix mode, owner and group
  as Microsoft's NFS ACEs, and a descriptor set with a mode ACE changes the file's mode
  (`with_nfs_aces`, `nfs_mode_taken`);
- volume capabilities: CASE_SENSITIVE on a `case sensitive` share, FULL_SYNC on a Time
  Machine destination (`fruit:time machine`, smb.time_machine);
- the model name (`fruit:model`, MacSamba by default), which Finder shows an icon for.

Once the query is answered, an empty named stream is none to FILE_OPEN nor listed (macOS's
view). On fruit shares, whether or not the query came, the AFP_AfpInfo stream keeps one whole
AfpInfo or nothing (`afp_info_written`), and one created and not yet written reads as an
empty whole one (`NO_AFP_INFO`); empty resource forks and AfpInfo streams are not listed
(`listed_stream`); the delete of a resource fork that holds something is ignored
(`keeps_resource_fork`), as on macOS's own server.

The reply is laid out as Samba's (check_aapl in vfs_fruit.c): the command, the request's
bitmap echoed, then each part asked for, in bitmap order. A context that is not a 24-byte
server query is refused, STATUS_INVALID_PARAMETER, as Samba refuses it.
"""
from __future__ import annotations

import dataclasses
import os
import struct
from typing import NamedTuple

from smbring.smb import acl, wire
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


class Offered(NamedTuple):
    """What a server query's reply offered the tree connect."""
    copyfile: bool
    readdir_attr: bool
    nfs_aces: bool

    def joined(self, other: "Offered") -> "Offered":
        """What two replies to the same tree connect offered together."""
        return Offered(*(a or b for a, b in zip(self, other)))


def answer(data: bytes, copyfile: bool, case_sensitive: bool, model: str,
           nfs_aces: bool = True, time_machine: bool = False) -> tuple[bytes, Offered]:
    """The AAPL context's reply to a server query, and what it offered (`copyfile`,
    `nfs_aces`, `time_machine`: whether fruit:copyfile, fruit:nfs_aces and the share's
    fruit:time machine are on)."""
    if len(data) != QUERY.size:
        raise SMBError(wire.STATUS_INVALID_PARAMETER)
    command, _reserved, bitmap, client_caps = QUERY.unpack(data)
    if command != SERVER_QUERY:
        raise SMBError(wire.STATUS_INVALID_PARAMETER)
    reply = struct.pack("<IIQ", SERVER_QUERY, 0, bitmap)
    offered = Offered(False, False, False)
    if bitmap & SERVER_CAPS:
        # enriched listings only where the client asks (its listings change layout); NFS ACEs
        # whether it asks or not, as Samba (macOS does not ask, and relies on them)
        offered = Offered(copyfile, bool(client_caps & SUPPORTS_READ_DIR_ATTR), nfs_aces)
        reply += struct.pack("<Q", UNIX_BASED | (SUPPORTS_OSX_COPYFILE if copyfile else 0)
                             | (SUPPORTS_READ_DIR_ATTR if offered.readdir_attr else 0)
                             | (SUPPORTS_NFS_ACE if nfs_aces else 0))
    if bitmap & VOLUME_CAPS:
        reply += struct.pack("<Q", (CASE_SENSITIVE if case_sensitive else 0) | (FULL_SYNC if time_machine else 0))
    if bitmap & MODEL_INFO:
        name = model.encode("utf-16-le")
        reply += struct.pack("<II", 0, len(name)) + name
    return reply, offered


# -- READ_DIR_ATTR: a FileIdBothDirectoryInformation entry's fields (vfs_fruit's readdir_attr)
AFP_INFO_SIZE = 60                  # the AFP_AfpInfo stream: a header, then FinderInfo
FINDER_INFO = slice(16, 48)         # its 32 bytes of FinderInfo
AD_DATE_DELTA = 946684800           # AppleDouble dates count seconds from 2000-01-01
AD_DATE_START = 0x80000000          # "no date"
GENERIC_ALL = 0x001F01FF            # the maximal access shown where it is not worked out
# within the entry (MS-FSCC 2.4.17): EaSize, then ShortNameLength, Reserved1, ShortName, and
# Reserved2
EA_SIZE_AT, RESERVED2_AT = 64, 94
ENTRY_FIELDS = struct.Struct("<IHQ16sH")


def compressed_finder_info(info: bytes | None, is_file: bool, birth_s: int) -> bytes:
    """The 16 bytes of Finder information a listing entry carries, as vfs_fruit compresses
    them: type and creator (files only), the Finder flags, the extended flags and the date
    the file was added (its birth, big-endian, from 2000); `info`: the AFP_AfpInfo stream's
    bytes, None where it has none (or not all 60), which leaves all but the date "none"."""
    if info is None or len(info) != AFP_INFO_SIZE:
        return bytes(12) + AD_DATE_START.to_bytes(4, "big")
    finder = info[FINDER_INFO]
    date_added = min(max(birth_s - AD_DATE_DELTA, 0), 0xFFFFFFFF)
    return (finder[0:8] if is_file else bytes(8)) + finder[8:10] + finder[24:26] + date_added.to_bytes(4, "big")


def entry_fields(entry: bytes, max_access: int, rfork_size: int, finder: bytes, mode: int) -> bytes:
    """A FileIdBothDirectoryInformation entry (fileinfo.dir_entry's) with the fields a
    READ_DIR_ATTR tree's listing carries in place of the EA size, the short name and Reserved2:
    the maximal access, the short name's length said as 24 (as Samba and macOS do) over the
    resource fork's size and the compressed Finder information, and the Unix mode's low 16 bits."""
    fields = ENTRY_FIELDS.pack(max_access, 24, rfork_size, finder, mode & 0xFFFF)
    return entry[:EA_SIZE_AT] + fields + entry[RESERVED2_AT + 2:]


# -- NFS ACEs (MS-NFS style, as vfs_fruit's): S-1-5-88-1-uid, S-1-5-88-2-gid, S-1-5-88-3-mode
NFS_USERS, NFS_GROUPS, NFS_MODE = 1, 2, 3
_NFS_DOMAIN = acl.sid(5, 88)[2:]        # the authority and first sub-authority of every one


def _nfs_kind(sid: bytes) -> int | None:
    """Which NFS SID this is (NFS_USERS, ...), 0 for another in S-1-5-88, None for none."""
    if sid[2:12] != _NFS_DOMAIN:
        return None
    return struct.unpack_from("<I", sid, 12)[0] if sid[1] >= 2 else 0


def with_nfs_aces(sd: acl.Descriptor, st: os.stat_result) -> acl.Descriptor:
    """The descriptor as a tree that negotiated NFS_ACE is shown it: any NFS ACE it holds
    taken out, then three that deny nothing and name the file's mode, owner and group."""
    kept = [ace for ace in sd.dacl or () if _nfs_kind(ace.sid) is None]
    nfs = [acl.Ace(acl.DENIED, 0, 0, acl.sid(5, 88, kind, value))
           for kind, value in ((NFS_MODE, st.st_mode), (NFS_USERS, st.st_uid), (NFS_GROUPS, st.st_gid))]
    return dataclasses.replace(sd, dacl=kept + nfs, control=sd.control | acl.SE_DACL_PRESENT)


def nfs_mode_taken(sd: acl.Descriptor) -> tuple[int | None, acl.Descriptor, bool]:
    """A descriptor a client sets on such a tree: the permission bits its first NFS mode ACE
    names (None without one), the descriptor without any NFS ACE, and whether its DACL is
    still to be set (not where NFS ACEs were all it held)."""
    mode = None
    for ace in sd.dacl or ():
        if _nfs_kind(ace.sid) == NFS_MODE and ace.sid[1] >= 3:
            mode = struct.unpack_from("<I", ace.sid, 16)[0] & 0o777
            break
    kept = [ace for ace in sd.dacl or () if _nfs_kind(ace.sid) is None]
    return mode, dataclasses.replace(sd, dacl=kept if sd.dacl is not None else None), bool(kept) or not sd.dacl


# -- the AFP_AfpInfo stream's writes, as vfs_fruit takes them (fruit_pwrite_meta) ------------
AFP_SIGNATURE, AFP_VERSION = b"AFP\0", (0x00000100).to_bytes(4, "big")
AFP_INFO_STREAM, RESOURCE_FORK_STREAM = "afp_afpinfo", "afp_resource"     # (case-folded)
FINDER_INFO_AT = 16


def is_afp_info(stream: str | None) -> bool:
    return stream is not None and stream.casefold() == AFP_INFO_STREAM


# what an AFP_AfpInfo stream not yet written reads as: a whole AfpInfo with no Finder
# information and no backup date (Samba's afpinfo_new, packed)
NO_AFP_INFO = AFP_SIGNATURE + AFP_VERSION + bytes(4) + AD_DATE_START.to_bytes(4, "big") + \
    bytes(AFP_INFO_SIZE - 16)


def afp_info_of(finder_info: bytes) -> bytes:
    """The AFP_AfpInfo stream macOS reads for these 32 bytes of Finder information."""
    return NO_AFP_INFO[:FINDER_INFO_AT] + finder_info + NO_AFP_INFO[FINDER_INFO_AT + len(finder_info):]


def shown_afp_info(stream: str | None, size: int) -> bool:
    """Whether an open of a fruit share's stream shows NO_AFP_INFO (its size, what it reads):
    an AfpInfo created and not written yet is a whole one to the opens that have it, as on
    macOS's server and Samba (fruit_pread_meta's fake_fd), and so is one that is not whole
    (another share wrote it); named, neither is found (CREATE's FILE_OPEN) nor listed
    (listed_stream)."""
    return size != AFP_INFO_SIZE and is_afp_info(stream)


def keeps_resource_fork(stream: str | None, size: int) -> bool:
    """Whether a delete of the named stream is ignored on a fruit share: macOS's server
    ignores the delete of a resource fork that holds something, and Samba's vfs_fruit with
    it (fruit_unlink_rsrc); one the client emptied goes."""
    return stream is not None and size > 0 and stream.casefold() == RESOURCE_FORK_STREAM


def listed_stream(name: str, size: int, negotiated: bool) -> bool:
    """Whether a fruit share lists the named stream (FileStreamInformation), as Samba's
    vfs_fruit: Finder information only as one whole AfpInfo, a resource fork only when it
    holds something (one emptied, or all zeros written to the Finder information, is gone
    for the client though its open may still be closing), and, to a client that negotiated
    AAPL (`negotiated`), no empty stream at all (fruit_filter_empty_streams: macOS has none)."""
    folded = name.casefold()
    if folded == AFP_INFO_STREAM:
        return size == AFP_INFO_SIZE
    return size > 0 or folded != RESOURCE_FORK_STREAM and not negotiated


def afp_info_written(data: bytes, offset: int) -> bytes | None:
    """What a WRITE of `data` at `offset` to an AFP_AfpInfo stream stores, as macOS's server
    and Samba's vfs_fruit store it: the stream is always the 60 bytes of one AfpInfo, written
    whole at 0 from the first 60 bytes given (zeros after a shorter write). None: nothing to
    store (a write that ends before FinderInfo); b"": FinderInfo all zeros, which removes the
    stream. SMBError STATUS_INVALID_PARAMETER for fewer than 3 bytes, fewer than 60 anywhere
    but at 0, or anything but an AfpInfo of version 1 (its signature, then its version where
    it reaches that far)."""
    if len(data) < 3 or offset != 0 and len(data) < AFP_INFO_SIZE or data[:3] != AFP_SIGNATURE[:3]:
        raise SMBError(wire.STATUS_INVALID_PARAMETER)
    if len(data) <= FINDER_INFO_AT:
        return None
    info = bytes(data[:AFP_INFO_SIZE]).ljust(AFP_INFO_SIZE, b"\0")
    if info[:4] != AFP_SIGNATURE or info[4:8] != AFP_VERSION:
        raise SMBError(wire.STATUS_INVALID_PARAMETER)
    if not any(info[FINDER_INFO]):
        return b""
    return info
