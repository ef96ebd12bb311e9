"""What Samba's smbd leaves in a file's extended attributes, read back: the DOS attributes and
creation time (`user.DOSATTRIB`), the NT security descriptor (`security.NTACL`, vfs_acl_xattr)
and the named streams (`user.DosStream.<name>:$DATA`, vfs_streams_xattr).

The layouts are Samba's NDR encodings (librpc/idl/xattr.idl): little-endian, each field
aligned to its size up to 4 bytes from the start of the value, a union preceded by its
16-bit discriminant, a pointer's target after every fixed field. Every function takes bytes
from the disk, which a local user may have written (user.* xattrs on his own files) and never
trusts them: a value that does not parse is None, never an exception or a partial result.
"""
from __future__ import annotations

import hashlib
import struct
from typing import NamedTuple

DOSATTRIB_XATTR = "user.DOSATTRIB"
NTACL_XATTR = "security.NTACL"
STREAM_PREFIX = "user.DosStream."
STREAM_SUFFIX = ":$DATA"

# xattr_DosInfoValidFlags
_VALID_ATTRIB, _VALID_CREATE_TIME = 0x1, 0x10


class _Reader:
    """Aligned little-endian reads from the start of `data`; ValueError past its end."""

    def __init__(self, data: bytes, pos: int = 0):
        self.data, self.pos = data, pos

    def take(self, fmt: str):
        size = struct.calcsize("<" + fmt)
        self.pos = (self.pos + min(size, 4) - 1) & ~(min(size, 4) - 1)
        if self.pos + size > len(self.data):
            raise ValueError("short")
        value = struct.unpack_from("<" + fmt, self.data, self.pos)[0]
        self.pos += size
        return value

    def skip(self, count: int) -> None:
        if self.pos + count > len(self.data):
            raise ValueError("short")
        self.pos += count

    def c_string(self) -> bytes:
        end = self.data.find(b"\0", self.pos)
        if end < 0:
            raise ValueError("unterminated")
        value, self.pos = self.data[self.pos:end], end + 1
        return value


def dos_info(blob: bytes) -> tuple[int | None, int | None] | None:
    """(attributes, creation time in NT time) from `user.DOSATTRIB`, each None where the value
    does not say it; None for a value that does not parse. Versions 1 to 5 of xattr_DosInfo,
    and the hex string alone that older Samba stored ("0x22")."""
    try:
        r = _Reader(blob)
        hex_attrib = r.c_string()
        if r.pos + 2 > len(blob):        # the hex string alone (Samba before 3.5)
            return int(hex_attrib, 16) & 0xFFFFFFFF, None
        version = r.take("H")
        if r.take("H") != version:       # the union's discriminant repeats it
            return None
        if version == 1:
            attrib = r.take("I")
            r.take("I"), r.take("Q"), r.take("Q")           # ea_size, size, alloc_size
            return attrib, r.take("Q") or None
        if version == 2:
            r.take("I")                                     # flags
            attrib = r.take("I")
            r.take("I"), r.take("Q"), r.take("Q")
            return attrib, r.take("Q") or None
        if version in (3, 4, 5):
            valid, attrib = r.take("I"), r.take("I")
            if version == 3:
                r.take("I"), r.take("Q"), r.take("Q")
            elif version == 4:
                r.take("Q")                                 # itime
            created = r.take("Q")
            return (attrib if valid & _VALID_ATTRIB else None,
                    created if valid & _VALID_CREATE_TIME and created else None)
    except (ValueError, UnicodeDecodeError):
        pass
    return None


class NtAcl(NamedTuple):
    """What `security.NTACL` holds: its version (1 to 4), the self-relative security
    descriptor, and (version 4) the SHA-256 Samba took of the POSIX ACLs, owner, group and
    mode it mapped the descriptor to (`posix_acl_hash` makes it), else None."""
    version: int
    descriptor: bytes
    posix_acl_hash: bytes | None


HASH_TYPE_SHA256 = 1


def nt_acl(blob: bytes) -> NtAcl | None:
    """`security.NTACL`'s content, versions 1 to 4 of xattr_NTACL; None for a value that does
    not parse. The descriptor is what follows the fixed fields, its offsets made its own."""
    posix_hash = None
    try:
        r = _Reader(blob)
        version = r.take("H")
        if r.take("H") != version or not 1 <= version <= 4:
            return None
        if not r.take("I"):              # the pointer to the descriptor (or to its record)
            return None
        if version >= 2:
            if not r.take("I"):          # the record's own pointer to the descriptor
                return None
            if version == 2:
                r.skip(16)               # hash (never used)
            else:
                hash_type = r.take("H")
                r.skip(64)               # the descriptor's hash
            if version == 4:
                r.c_string()             # description of what wrote it
                r.take("Q")              # time
                r.skip(64)
                if hash_type == HASH_TYPE_SHA256:
                    posix_hash = bytes(r.data[r.pos - 64:r.pos - 32])
        start = (r.pos + 3) & ~3
    except ValueError:
        return None
    sd = bytearray(blob[start:])
    if len(sd) < 20 or sd[0] != 1:
        return None
    # its owner, group, SACL and DACL offsets count from the start of the xattr (NDR's
    # relative pointers), a self-relative descriptor's from its own
    offsets = struct.unpack_from("<4I", sd, 4)
    if any(o and not start + 20 <= o < start + len(sd) for o in offsets):     # (past the header)
        return None
    struct.pack_into("<4I", sd, 4, *(o - start if o else 0 for o in offsets))
    return NtAcl(version, bytes(sd), posix_hash)


# -- the hash that tells Samba whether a version 4 NT ACL still holds (vfs_acl_common's
# validate_nt_acl_blob): SHA-256 of the NDR encoding of smb_acl_wrapper (librpc/idl/smb_acl.idl)
# made of what posix_sys_acl_blob_get_fd reads: the access ACL, a directory's default ACL
# (files: none), the owner, group and mode (its type bits too). An ACL is its entries as
# libacl gives them (the kernel's order; an access ACL the kernel keeps in the mode alone: its
# owner, group and other entries), each tag as Samba numbers it
POSIX_ACL_VERSION = 2
_POSIX_ACL_ENTRY = struct.Struct("<HHI")         # tag, permissions, id
# Linux's tags (ACL_USER_OBJ ... ACL_OTHER) -> smb_acl_tag_t's; those with an id: USER, GROUP
_SMB_ACL_TAG = {0x01: 2, 0x02: 1, 0x04: 4, 0x08: 3, 0x10: 6, 0x20: 5}
_SMB_ACL_USER, _SMB_ACL_GROUP = 1, 3


def posix_acl_entries(raw: bytes | None, mode: int) -> list[tuple[int, int | None, int]] | None:
    """The entries (smb_acl_tag_t, uid or gid or None, permissions) of an ACL the kernel keeps
    in `system.posix_acl_access` or `..._default` (`raw`; None: none kept, an access ACL is
    then the mode's); None where `raw` does not parse."""
    if raw is None:
        return [(2, None, (mode >> 6) & 7), (4, None, (mode >> 3) & 7), (5, None, mode & 7)]
    if len(raw) < 4 or (len(raw) - 4) % _POSIX_ACL_ENTRY.size or \
            struct.unpack_from("<I", raw)[0] != POSIX_ACL_VERSION:
        return None
    entries = []
    for at in range(4, len(raw), _POSIX_ACL_ENTRY.size):
        tag, perm, qualifier = _POSIX_ACL_ENTRY.unpack_from(raw, at)
        smb_tag = _SMB_ACL_TAG.get(tag)
        if smb_tag is None or perm > 7:
            return None
        entries.append((smb_tag, qualifier if smb_tag in (_SMB_ACL_USER, _SMB_ACL_GROUP) else None, perm))
    return entries


class _NdrOut:
    """NDR's little-endian encoding, each value aligned to its size from the start."""

    def __init__(self):
        self.data = bytearray()

    def put(self, fmt: str, value: int) -> None:
        size = struct.calcsize("<" + fmt)
        self.data += bytes(-len(self.data) % size) + struct.pack("<" + fmt, value)

    def align(self, size: int) -> None:
        self.data += bytes(-len(self.data) % size)

    def acl(self, entries: list) -> None:
        self.put("I", len(entries))         # the array's conformance, before the struct
        self.align(8)
        self.put("i", len(entries))         # count
        self.put("i", 0)                    # next
        for tag, qualifier, perm in entries:
            self.align(8)
            self.put("H", tag)              # a_type
            self.put("H", tag)              # the union's discriminant
            if qualifier is not None:
                self.put("Q", qualifier)    # uid_t, gid_t: 64 bits
            self.put("I", perm)


def posix_acl_hash(access: list, default: list | None, uid: int, gid: int, mode: int) -> bytes:
    """The hash Samba keeps in a version 4 NT ACL for these ACLs (posix_acl_entries'; `default`
    None for a file), owner, group and mode."""
    out = _NdrOut()
    out.put("I", 0x20000)                           # access_acl: a unique pointer's referent id
    out.put("I", 0x20004 if default is not None else 0)
    out.put("Q", uid)
    out.put("Q", gid)
    out.put("I", mode)
    out.acl(access)
    if default is not None:
        out.acl(default)
    return hashlib.sha256(out.data).digest()


def stream_name(xattr_name: str) -> str | None:
    """The stream a vfs_streams_xattr xattr holds ("user.DosStream.Zone.Identifier:$DATA" ->
    "Zone.Identifier"), None for any other xattr."""
    if not xattr_name.startswith(STREAM_PREFIX) or not xattr_name.endswith(STREAM_SUFFIX):
        return None
    name = xattr_name[len(STREAM_PREFIX):-len(STREAM_SUFFIX)]
    return name or None


def stream_data(value: bytes) -> bytes:
    """A stream's contents: vfs_streams_xattr stores them with one NUL byte after them."""
    return value[:-1] if value.endswith(b"\0") else value


# -- macOS metadata as Samba's vfs_fruit keeps it by default (fruit:metadata = netatalk,
# fruit:resource = file): AppleDouble version 2 (RFC 1740), in the file's xattr for its
# Finder information, in "._<name>" beside it for its resource fork
NETATALK_XATTR = "user.org.netatalk.Metadata"
APPLEDOUBLE_PREFIX = "._"
AD_RESOURCE_FORK, AD_FINDER_INFO = 2, 9
FINDER_INFO_SIZE = 32
_AD_HEADER = struct.Struct(">II16sH")         # magic, version, filler, number of entries
_AD_ENTRY = struct.Struct(">III")             # id, offset, length
_AD_MAGIC, _AD_VERSION = 0x00051607, 0x00020000


def appledouble_entries(head: bytes, size: int) -> dict[int, tuple[int, int]] | None:
    """The entries (id -> offset, length) of an AppleDouble file or xattr of `size` bytes whose
    first bytes are `head`; None where it is not one, or an entry lies outside it."""
    if len(head) < _AD_HEADER.size:
        return None
    magic, version, _filler, count = _AD_HEADER.unpack_from(head)
    if magic != _AD_MAGIC or version != _AD_VERSION or _AD_HEADER.size + count * _AD_ENTRY.size > len(head):
        return None
    entries = {}
    for i in range(count):
        entry, offset, length = _AD_ENTRY.unpack_from(head, _AD_HEADER.size + i * _AD_ENTRY.size)
        if offset + length > size:
            return None
        entries[entry] = (offset, length)
    return entries


def finder_info(blob: bytes, entries: dict[int, tuple[int, int]] | None = None) -> bytes | None:
    """The 32 bytes of Finder information an AppleDouble value holds, None where it holds
    none, or only zeros (macOS's "no Finder information"). `blob`: the whole value, or the
    first bytes of an AppleDouble file whose `entries` were read (its resource fork may lie
    past them)."""
    if entries is None:
        entries = appledouble_entries(blob, len(blob))
    found = entries.get(AD_FINDER_INFO) if entries else None
    if found is None or found[1] < FINDER_INFO_SIZE or found[0] + FINDER_INFO_SIZE > len(blob):
        return None
    info = blob[found[0]:found[0] + FINDER_INFO_SIZE]
    return info if any(info) else None


# macOS writes a file's extended attributes into its "._" file too (an AppleDouble file it
# made on a volume without them): an "ATTR" block after the Finder information, inside its
# entry, then the resource fork. The block: a header (ATTR_HEADER), then one entry per
# attribute, each aligned to 4 bytes (ATTR_ENTRY and a NUL-terminated UTF-8 name), then the
# values, all within the header's total size (at most ATTR_MAX_SIZE, and before the
# resource fork)
ATTR_MAGIC = 0x41545452                     # "ATTR"
ATTR_HEADER = struct.Struct(">IIIII12sHH")  # magic, debug tag, total size, data start, data length, reserved, flags, count
ATTR_ENTRY = struct.Struct(">IIHB")         # value's offset, its length, flags, name's length (its NUL included)
ATTR_MAX_SIZE = 65536
ATTR_MAX_COUNT = 1024


def appledouble_xattrs(blob: bytes, entries: dict[int, tuple[int, int]]) -> list[tuple[str, bytes]] | None:
    """The extended attributes (name, value) macOS embedded in an AppleDouble file whose
    first bytes are `blob` (at least the block's total size, at most ATTR_MAX_SIZE) and
    whose entries are `entries`: [] where it embedded none, None where the block does not
    parse (every offset and length is checked against the block, every name must be UTF-8)."""
    found = entries.get(AD_FINDER_INFO)
    if found is None or found[1] <= FINDER_INFO_SIZE:
        return []
    at = found[0] + FINDER_INFO_SIZE + 2            # (two bytes of padding)
    if at + ATTR_HEADER.size > len(blob):
        return None
    magic, _tag, total, data_start, data_length, _res, _flags, count = ATTR_HEADER.unpack_from(blob, at)
    fork = entries.get(AD_RESOURCE_FORK)
    if (magic != ATTR_MAGIC or total > min(len(blob), ATTR_MAX_SIZE) or (fork and total > fork[0])
            or data_start < at + ATTR_HEADER.size or data_start + data_length > total
            or count > ATTR_MAX_COUNT):
        return None
    found_xattrs = []
    at += ATTR_HEADER.size
    for _ in range(count):
        at = (at + 3) & ~3
        if at + ATTR_ENTRY.size > data_start:
            return None
        offset, length, _flags, name_length = ATTR_ENTRY.unpack_from(blob, at)
        name_at = at + ATTR_ENTRY.size
        if (not name_length or name_at + name_length > data_start or offset < data_start
                or offset + length > total):
            return None
        try:
            name = blob[name_at:name_at + name_length].rstrip(b"\0").decode()
        except UnicodeDecodeError:
            return None
        if not name or "\0" in name:
            return None
        found_xattrs.append((name, blob[offset:offset + length]))
        at = name_at + name_length
    return found_xattrs


# the characters Windows refuses in a name, as macOS's SMB client (and Samba's vfs_fruit,
# its macos_string_replace_map) carries them: in Unicode's private use area
MAC_NAME_MAP = {**{c: 0xF000 + c for c in range(0x01, 0x20)},
                **{ord(c): 0xF020 + i for i, c in enumerate('"*:<>?\\|')}}


def mac_stream_name(xattr_name: str) -> str:
    """The named stream macOS's attribute `xattr_name` is over SMB ("com.apple.metadata:
    _kMDItemUserTags" -> "com.apple.metadata\\uf022_kMDItemUserTags")."""
    return xattr_name.translate(MAC_NAME_MAP)


# what a "._" file holds, as the named streams of its file macOS's client shows them as
AFP_INFO_STREAM, RESOURCE_FORK_STREAM = "AFP_AfpInfo", "AFP_Resource"
# bytes of a "._" file its header, entry table and embedded extended attributes fit in
APPLEDOUBLE_HEAD = ATTR_MAX_SIZE


class AppleDoubleContent(NamedTuple):
    """What an AppleDouble ("._") file holds for its file: its Finder information (None:
    none, or only zeros), where its resource fork lies in it (offset, length; a length of 0:
    none), the extended attributes macOS embedded, each under the name of the stream it
    becomes (None: its ATTR block does not parse), and whether netatalk or Samba's vfs_fruit
    wrote it (their storage of a file's resource fork, `fruit:resource = file`; macOS writes
    "Mac OS X" where they write "Netatalk")."""
    finder_info: bytes | None
    resource_fork: tuple[int, int]
    streams: list[tuple[str, bytes]] | None
    by_netatalk: bool = False


NETATALK_FILLER = b"Netatalk".ljust(16)
# the resource fork macOS writes into a "._" file for a file that has none: a resource map
# holding nothing, after 256 bytes of header and data ("This resource fork intentionally left
# blank"); Samba's fruit:wipe_intentionally_left_blank_rfork takes it for none
BLANK_RESOURCE_FORK = (bytes.fromhex("000001000000010000000000" "0000001e")
                       + b"This resource fork intentionally left blank   ").ljust(256, b"\0") + \
    bytes.fromhex("0000010000000100000000000000001e" "0000000000000000001c001effff")


def converted_appledouble(finder_info: bytes | None) -> bytes:
    """The "._" file Samba's vfs_fruit leaves once it took a file's "._" into its streams
    and keeps the file (fruit:delete_empty_adfiles = no): the Finder information alone (32
    bytes, zeros for none) and an empty resource fork, written "Netatalk" (so that it is
    not taken in again)."""
    info = (finder_info or b"").ljust(FINDER_INFO_SIZE, b"\0")[:FINDER_INFO_SIZE]
    start = _AD_HEADER.size + 2 * _AD_ENTRY.size
    return (_AD_HEADER.pack(_AD_MAGIC, _AD_VERSION, NETATALK_FILLER, 2)
            + _AD_ENTRY.pack(AD_FINDER_INFO, start, FINDER_INFO_SIZE)
            + _AD_ENTRY.pack(AD_RESOURCE_FORK, start + FINDER_INFO_SIZE, 0) + info)


def appledouble_content(head: bytes, size: int) -> AppleDoubleContent | None:
    """The content of the AppleDouble file of `size` bytes whose first APPLEDOUBLE_HEAD (or
    fewer) bytes are `head`; None where it is not one."""
    entries = appledouble_entries(head, size)
    if entries is None:
        return None
    xattrs = appledouble_xattrs(head, entries)
    return AppleDoubleContent(finder_info(head, entries), entries.get(AD_RESOURCE_FORK, (0, 0)),
                              None if xattrs is None else [(mac_stream_name(n), v) for n, v in xattrs],
                              head[8:24] == NETATALK_FILLER)
