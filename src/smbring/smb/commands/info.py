"""QUERY_INFO and SET_INFO (MS-SMB2 3.3.5.20, 3.3.5.21): file, file-system and security
information."""
from __future__ import annotations

import errno
import stat
import struct
from typing import TYPE_CHECKING

from smbring.smb import aapl, acl, dirleases, notify, sharemodes, time_machine, unix_owner, vetoed_entries, wire
from smbring.smb.commands import pipe, setinfo_hold, stream_default
from smbring.smb.commands.create import (
    ADD_FILE,
    ADD_SUBDIRECTORY,
    check_veto,
    open_streams,
    parent_descriptor,
    parent_is_directory,
    sd_of,
    set_allocation,
    shown_hidden,
    stored_sd,
)
from smbring.smb.contexts import encode_eas, parse_eas
from smbring.smb.eas import store_eas
from smbring.smb.errors import SMBError, in_request, write_refused
from smbring.smb.fileinfo import (
    file_of,
    ATTR_SPARSE_FILE,
    MAX_FILE_SIZE,
    NETWORK_OPEN_INFO,
    ROOT_UUID,
    STORED_ATTRIBUTES,
    alloc_size,
    attributes,
    is_read_only,
    keep_write_time,
    network_open_info,
    set_file_times,
    pin_creation_time,
    short_name,
    stored_ns,
    streams_going_with,
    time_fields,
    writable_for_metadata,
)
from smbring.smb.fs import DosInfo, FileSystem, split_path, split_stream
from smbring.smb.state import Open
from smbring.smb.wire import Header
from smbring.smb.write_times import WriteTimes

if TYPE_CHECKING:
    from smbring.smb.connection import Connection
    from smbring.smb.tunnel import NameTunnel


# what reading each file information class needs (MS-SMB2 3.3.5.20.1)
READ_ATTRIBUTES_CLASSES = {4, 18, 34, 35}

FILE_READ_EA, FILE_READ_ATTRIBUTES, READ_CONTROL = 0x8, 0x80, 0x20000
# FileFsAttributeInformation's: case-sensitive search and case-preserved names, Unicode
# names, security descriptors kept (Windows shows its Security tab only then), sparse files,
# object ids, named streams: the flags Samba reports (with streams), which clients know
FS_PERSISTENT_ACLS = 0x8
FS_ATTRIBUTES = 0x1 | 0x2 | 0x4 | FS_PERSISTENT_ACLS | 0x40 | 0x10000 | 0x40000
VOLUME_SERIAL = 0x534D4252              # FileFsVolumeInformation's, FileIdInformation's
STATUS_NOT_SAME_DEVICE = 0xC00000D4     # a hard link to another file system


def may_read(o: Open, need: int) -> bool:
    """Whether the open was granted `need` (generic rights are mapped when it is granted)."""
    return bool(o.granted & need)


# what the file information classes carry (MS-FSCC 2.4), packed in one go each
BASIC = struct.Struct("<4QII")                  # FileBasicInformation: times, attributes
STANDARD = struct.Struct("<QQIBBH")             # FileStandardInformation
ALL = struct.Struct("<4QII QQIBBH QIIQIII")     # FileAllInformation up to its name
# FileAllInformation after its times, attributes and sizes (NETWORK_OPEN_INFO's, in another
# order): NumberOfLinks, DeletePending, Directory, Reserved, IndexNumber, EaSize, AccessFlags,
# CurrentByteOffset, Mode, AlignmentRequirement, FileNameLength
ALL_TAIL = struct.Struct("<IBBHQIIQIII")
NETWORK_OPEN = struct.Struct("<4QQQII")         # FileNetworkOpenInformation
# (its Reserved field, after what fileinfo.network_open_info packs)
NETWORK_OPEN_RESERVED = bytes(NETWORK_OPEN.size - NETWORK_OPEN_INFO.size)
# the classes answered from the open alone, without the file's stat or DOS information
OPEN_ONLY_CLASSES = {7, 8, 14, 15, 16, 17, 21, 48}
# the classes that answer or act on an open's name (FileAllInformation, its 8.3 name, its
# streams, its normalized name; a rename, a hard link): with several workers, the open takes
# the names other workers' renames gave its file first (ServerState.catch_up_renames), whose
# hint may not have been read yet; the other classes reach the file by its descriptor
BY_NAME_QUERIES = frozenset({18, 21, 22, 48})
BY_NAME_CHANGES = frozenset({10, 11})


def file_info(c: Connection, o: Open, klass: int) -> bytes:
    # (may_read written out: asked for every query)
    if klass in READ_ATTRIBUTES_CLASSES and not o.granted & FILE_READ_ATTRIBUTES or \
            klass == 15 and not o.granted & FILE_READ_EA:
        raise SMBError(wire.STATUS_ACCESS_DENIED)
    fs = o.tree.fs
    if klass in OPEN_ONLY_CLASSES:
        return open_info(c, o, klass)
    st = fs.fstat(o.fd)
    if klass == 6:   # FileInternalInformation: the id every other query reports too
        return struct.pack("<Q", o.tree.file_id(o.index_number or st.st_ino))
    if klass == 59:  # FileIdInformation: the volume's serial number, the FileId in 128 bits
        return struct.pack("<QQQ", VOLUME_SERIAL, o.tree.file_id(o.index_number or st.st_ino), 0)
    if klass == 28:  # FileCompressionInformation
        return struct.pack("<QHBBB3s", 0 if o.is_dir else st.st_size, 0, 0, 0, 0, b"\0" * 3)
    if klass == 22:  # FileStreamInformation: the file's own data, then its named streams
        key = o.base_key or fs.stream_id(o.parts)
        entries = []
        if not o.is_dir or o.stream:
            base = st if not o.stream else fs.stat(o.base_parts)   # beneath the root
            entries.append(("::$DATA", base.st_size, alloc_size(base)))
        for name, sst in fs.streams(key):
            if o.tree.share.fruit and not aapl.listed_stream(name, sst.st_size, o.tree.aapl is not None):
                continue
            entries.append((f":{name}:$DATA", sst.st_size, alloc_size(sst)))
        return wire.chain((struct.pack("<IIQQ", 0, len(wire.utf16(n)), sz, al) + wire.utf16(n)
                           for n, sz, al in entries), 8)
    if klass not in (4, 5, 18, 34, 35):
        raise SMBError(wire.STATUS_INVALID_INFO_CLASS)
    dos = fs.get_dos(o.fd)
    # the times and attributes are the file's, through a stream's handle too (the sizes
    # are the stream's own)
    file_st, file_dos, file_key = st, dos, o.key
    if o.stream is not None and klass != 5:
        with file_of(o) as fd:
            file_st, file_dos = fs.fstat(fd), fs.get_dos(fd)
        file_key = (file_st.st_dev, file_st.st_ino)
    elif klass == 34:   # FileNetworkOpenInformation of a file or directory (Windows asks it most)
        return network_open_info(st, dos, c.state.write_times.shown(file_key), shown_hidden(o), st, dos,
                                 o.is_dir) + NETWORK_OPEN_RESERVED
    elif klass == 18:   # FileAllInformation of a file or directory (smbclient asks it of each)
        return all_information(c, o, st, dos)
    attrs = attributes(file_st, file_dos, hidden=shown_hidden(o))
    if klass == 35:  # FileAttributeTagInformation
        return struct.pack("<II", attrs, 0)
    size = 0 if o.is_dir else st.st_size
    if o.tree.share.fruit and aapl.shown_afp_info(o.stream, size):
        size = aapl.AFP_INFO_SIZE
    if klass != 5:
        write_ns = c.state.write_times.shown(file_key)
        shown_times = time_fields(file_st, file_dos, write_ns)
        if klass == 4:
            return BASIC.pack(*shown_times, attrs, 0)
        if klass == 34:
            return NETWORK_OPEN.pack(*shown_times, alloc_size(st, dos), size, attrs, 0)
    links, pending = links_shown(c, o, st)
    standard = (alloc_size(st, dos), size, links, pending, int(o.is_dir), 0)
    if klass == 5:
        return STANDARD.pack(*standard)
    # FileAllInformation: basic, standard, internal, EA, access, position, mode, alignment
    name = wire.utf16("\\" + o.display_name())
    return ALL.pack(*shown_times, attrs, 0, *standard, o.tree.file_id(o.index_number or st.st_ino), 0, o.granted,
                    o.position, o.mode, 0, len(name)) + name


def links_shown(c: Connection, o: Open, st) -> tuple[int, int]:
    """FileStandardInformation's NumberOfLinks and DeletePending: a directory has one name
    (Unix counts its subdirectories' ".." too); a file about to go is no longer counted among
    its names (NTFS reports NumberOfLinks 0)."""
    pending = o.delete_on_close or c.state.is_delete_pending(o.key)
    links = min(st.st_nlink, 1) if o.is_dir else st.st_nlink
    return links - int(pending and links > 0), int(pending)


def all_information(c: Connection, o: Open, st, dos) -> bytes:
    """FileAllInformation of a file or directory (not a stream): its times, attributes and
    sizes as FileNetworkOpenInformation encodes them (in C, mostly), then the rest."""
    info = network_open_info(st, dos, c.state.write_times.shown(o.key), shown_hidden(o), st, dos, o.is_dir)
    links, pending = links_shown(c, o, st)
    name = wire.utf16("\\" + o.display_name())
    # (the times, the attributes and Reserved, AllocationSize and EndOfFile)
    return info[:32] + info[48:52] + bytes(4) + info[32:48] + ALL_TAIL.pack(
        links, pending, o.is_dir, 0, o.tree.file_id(o.index_number or st.st_ino), 0, o.granted, o.position,
        o.mode, 0, len(name)) + name


def open_info(c: Connection, o: Open, klass: int) -> bytes:
    """The information classes that the open alone answers (its EAs, position, mode, name)."""
    fs = o.tree.fs
    if klass in (7, 15):    # the EAs are the file's, through a stream's handle too
        if not o.tree.share.ea_support:
            eas = []        # (`ea support = no`: none, as smbd shows them)
        else:
            with file_of(o) as fd:
                eas = fs.list_eas(fd)
    if klass == 7:   # FileEaInformation: what FileFullEaInformation would take
        return struct.pack("<I", len(encode_eas(eas)) if eas else 0)
    if klass == 15:  # FileFullEaInformation
        if not eas:
            raise SMBError(wire.STATUS_NO_EAS_ON_FILE)
        return encode_eas(eas)
    if klass == 8:   # FileAccessInformation: the access granted
        return struct.pack("<I", o.granted)
    if klass == 14:
        return struct.pack("<Q", o.position)
    if klass == 16:
        return struct.pack("<I", o.mode)
    if klass == 17:
        return struct.pack("<I", 0)
    if klass == 21:  # FileAlternateNameInformation: the 8.3 name old clients see
        if not o.tree.names.short_names:
            raise SMBError(wire.STATUS_OBJECT_NAME_NOT_FOUND)      # (as NTFS without 8.3 names)
        base = o.base_parts if o.base_parts is not None else o.parts
        n = wire.utf16(short_name(base[-1]) if base else "")
        return struct.pack("<I", len(n)) + n
    # 48: FileNormalizedNameInformation (SMB 3.1.1): the path as stored
    if c.dialect < wire.SMB311:
        raise SMBError(wire.STATUS_NOT_SUPPORTED)
    n = wire.utf16(o.display_name())
    return struct.pack("<I", len(n)) + n


def fs_info(c: Connection, o: Open, fs: FileSystem, klass: int) -> bytes:
    sv = fs.statvfs()
    unit = sv.f_frsize or 4096
    share = o.tree.share
    if klass == 1:   # FileFsVolumeInformation: the share's name, or its `volume`, as Samba's
        label = wire.utf16(share.volume or share.name)
        return struct.pack("<QIIBB", 0, VOLUME_SERIAL, len(label), 0, 0) + label
    if klass in (3, 7) and share.fruit and share.time_machine and share.time_machine_max_size:
        # a Time Machine destination of a set size: that size, less what its backups use
        total, free = time_machine.sizes(o.tree, share.time_machine_max_size)
        per_unit = time_machine.UNIT // 512
        if klass == 3:
            return struct.pack("<QQII", total, free, per_unit, 512)
        return struct.pack("<QQQII", total, free, free, per_unit, 512)
    total, caller_free, free = sv.f_blocks, sv.f_bavail, sv.f_bfree
    if c.policy.max_disk_size:      # (`max disk size`, as Samba's disk_norm)
        most = c.policy.max_disk_size * (1 << 20) // unit
        total, caller_free, free = min(total, most), min(caller_free, most - 1), min(free, most - 1)
    if klass == 3:   # FileFsSizeInformation
        return struct.pack("<QQII", total, caller_free, unit // 512, 512)
    if klass == 4:   # FileFsDeviceInformation
        return struct.pack("<II", 7, 0)
    if klass == 5:   # FileFsAttributeInformation: what the share's file system supports, and
        # its name (`fstype`)
        name = wire.utf16(share.fstype)
        flags = FS_ATTRIBUTES if share.nt_acl_support else FS_ATTRIBUTES & ~FS_PERSISTENT_ACLS
        return struct.pack("<III", flags, 255, len(name)) + name
    if klass == 7:   # FileFsFullSizeInformation
        return struct.pack("<QQQII", total, caller_free, free, unit // 512, 512)
    if klass == 6:   # FileFsControlInformation: no quotas
        return struct.pack("<QQQQQII", 0, 0, 0, 0xFFFFFFFFFFFFFFFF, 0xFFFFFFFFFFFFFFFF, 0, 0)
    if klass == 8:   # FileFsObjectIdInformation
        return ROOT_UUID + b"\0" * 48
    if klass == 11:  # FileFsSectorSizeInformation: aligned device and partition; TRIM_ENABLED
        # (0x8): FSCTL_FILE_LEVEL_TRIM releases storage (ioctl_sparse.file_level_trim)
        return struct.pack("<IIIIIIII", 512, 512, 512, 512, 0x3 | 0x8, 0, 0, 0)[:28]
    raise SMBError(wire.STATUS_INVALID_INFO_CLASS)


def file_is_read_only(o: Open) -> bool:
    """Whether the open's file has the READONLY attribute: a stream's file's (a read-only
    file's streams are not deleted either, as in MS-FSA, where the attributes are the
    file's)."""
    fs = o.tree.fs
    with file_of(o) as fd:
        return is_read_only(fs.fstat(fd), fs.get_dos(fd))


def current_sd(o: Open, fd: int | None = None) -> acl.Descriptor:
    """The file's stored descriptor, else the one its mode bits give (write bits dropped for
    the READONLY attribute counted as there). `fd`: the file's (`file_of`), where it is
    open already; through a stream's handle, the descriptor is its file's."""
    if fd is None:
        with file_of(o) as fd:
            return current_sd(o, fd)
    fs = o.tree.fs
    stored = sd_of(fs, fd, o.path())
    if stored is not None:
        return stored
    dos = fs.get_dos(fd)
    return acl.from_mode(fs.fstat(fd), bool(dos and dos.attrs & wire.ATTR_READONLY))


def shown_sd(o: Open, tree, parts: int) -> acl.Descriptor:
    """The descriptor a security query shows: `current_sd`, with the file's NFS ACEs (mode,
    owner, group) in its DACL on a tree that negotiated them (smb.aapl)."""
    if not (tree.aapl and tree.aapl.nfs_aces and parts & acl.DACL):
        return current_sd(o)
    with file_of(o) as fd:
        return aapl.with_nfs_aces(current_sd(o, fd), tree.fs.fstat(fd))


def h_query_info(c: Connection, hdr: Header, msg: bytes, rhdr: Header, chain):
    tree = chain.tree or c.tree(hdr)
    if tree.fs is None:
        return pipe.h_query_info(c, hdr, msg, rhdr, chain)
    _size, info_type, klass, out_len = struct.unpack_from("<HBBI", msg, 64)
    o = c.open_for(bytes(msg[88:104]), chain, hdr)
    if info_type == wire.INFO_FILE:
        if klass in BY_NAME_QUERIES:
            c.state.catch_up_renames(o.key)     # (workers: another's rename, its hint not read yet)
        data = file_info(c, o, klass)
    elif info_type == wire.INFO_FILESYSTEM:
        data = fs_info(c, o, tree.fs, klass)
    elif info_type == wire.INFO_SECURITY:
        # AdditionalInformation names the parts; none at all gets an empty descriptor, which
        # needs no right (as Windows answers)
        parts = struct.unpack_from("<I", msg, 80)[0]
        if parts & (acl.OWNER | acl.GROUP | acl.DACL) and not may_read(o, READ_CONTROL):
            raise SMBError(wire.STATUS_ACCESS_DENIED)
        if parts & acl.SACL and not o.granted & acl.ACCESS_SYSTEM_SECURITY:
            raise SMBError(wire.STATUS_ACCESS_DENIED)   # (MS-SMB2 3.3.5.20.3; no open holds it)
        data = shown_sd(o, tree, parts).pack(parts & (acl.OWNER | acl.GROUP | acl.DACL | acl.SACL))
    else:
        raise SMBError(wire.STATUS_NOT_SUPPORTED)
    if len(data) > out_len:
        fixed = VARIABLE_PART.get((info_type, klass))
        if fixed is None or out_len < fixed:
            # a fixed-size answer that does not fit at all is a length mismatch; a name or
            # list that is cut short is an overflow (MS-SMB2 3.3.5.20.1, MS-FSCC)
            if info_type != wire.INFO_SECURITY:
                raise SMBError(wire.STATUS_INFO_LENGTH_MISMATCH)
        if info_type == wire.INFO_SECURITY:
            rhdr.status = 0xC0000023  # STATUS_BUFFER_TOO_SMALL with the size needed
            return struct.pack("<HBBI", 9, 0, 0, 4) + struct.pack("<I", len(data)), None
        rhdr.status = wire.STATUS_BUFFER_OVERFLOW
        data = data[:out_len]
    return struct.pack("<HHI", 9, 72, len(data)) + data, None


def macos_descriptor(tree, parts: int, new: acl.Descriptor) -> tuple[int, acl.Descriptor, int | None]:
    """What a security SET_INFO on a fruit share sets, as Samba's vfs_fruit: the parts, the
    descriptor and the permission bits to give the file (None: its mode stays). A DACL with
    no ACE is not set (`fruit:ignore_zero_aces`: macOS sends them where it means no change);
    on a tree that negotiated NFS ACEs, they are taken out, a mode ACE's bits are the file's
    new permissions, and a DACL that held NFS ACEs only is not set."""
    mode = None
    if tree.share.fruit and tree.share.fruit_ignore_zero_aces and parts & acl.DACL and not new.dacl:
        parts &= ~acl.DACL
    if tree.aapl and tree.aapl.nfs_aces and parts & acl.DACL:
        mode, new, set_dacl = aapl.nfs_mode_taken(new)
        if not set_dacl:
            parts &= ~acl.DACL
    return parts, new, mode


# (info type, class) -> size of the fixed part before a variable-length name or list
# (the sizes Windows checks against, which smbtorture's buffercheck tests expect)
VARIABLE_PART = {
    (wire.INFO_FILE, 18): 104, (wire.INFO_FILE, 21): 8, (wire.INFO_FILE, 22): 32,
    (wire.INFO_FILE, 48): 8,
    (wire.INFO_FILESYSTEM, 1): 24, (wire.INFO_FILESYSTEM, 5): 16,
}


def file_size(buf) -> int:
    """A size a client sets (end of file, allocation): a negative one (as the signed 64-bit
    value it is) is malformed, one past NTFS's largest file cannot fit (as NTFS answers)."""
    size = struct.unpack_from("<q", buf, 0)[0]
    if size < 0:
        raise SMBError(wire.STATUS_INVALID_PARAMETER)
    if size > MAX_FILE_SIZE:
        raise SMBError(wire.STATUS_DISK_FULL)
    return size


def new_name(o: Open, buf) -> tuple[bool, list[str]]:
    """ReplaceIfExists and the checked path of FileRenameInformation or FileLinkInformation
    (MS-FSCC 2.4.42.2, 2.4.27.2: the same layout; the name relative to the share's root),
    its directories spelled as on disk."""
    replace = bool(buf[0])
    name_len = struct.unpack_from("<I", buf, 16)[0]
    if 20 + name_len > len(buf):
        raise SMBError(wire.STATUS_INVALID_PARAMETER)
    rules = o.tree.names
    name = wire.from_utf16(buf[20:20 + name_len])
    new_parts = split_path(rules.in_default_case(name) if rules.folds_paths else name)
    check_veto(rules, new_parts)          # no file gets a vetoed name
    if not rules.case_sensitive:
        new_parts = o.tree.fs.match_case(new_parts[:-1]) + new_parts[-1:]
        check_veto(rules, new_parts)
    return replace, new_parts


def target_on_disk(o: Open, new_parts: list[str], renaming: bool = True,
                   tunnel: NameTunnel | None = None) -> list[str]:
    """The name a rename or a link of `o` is to get, as the file system is to be asked for it:
    an existing file's spelling where the name is one in another case (SMB names are
    case-insensitive, unless the share is `case sensitive`), a new name in the case
    `preserve case` gives it, or (`tunnel`, on a share with `mangled names`) the long name
    this user just removed from that directory whose 8.3 short name it is (smb.tunnel). For
    a rename (`renaming`), the file's own name in another case stays as asked: the rename
    changes only its case (a link to it is a name it has)."""
    rules = o.tree.names
    spelled = new_parts if rules.case_sensitive else o.tree.fs.match_case(new_parts)
    if spelled == new_parts:
        try:
            o.tree.fs.stat(new_parts)
            return new_parts
        except OSError:
            pass
        tunneled = (tunnel.found(o.tree.fs, new_parts, o.tree.token.owner)
                    if tunnel is not None and not rules.case_sensitive and o.tree.share.mangled_names else None)
        if tunneled is not None:
            check_veto(rules, new_parts[:-1] + [tunneled])
            return new_parts[:-1] + [tunneled]
        return new_parts[:-1] + [rules.new_name(new_parts[-1])]
    try:
        st = o.tree.fs.stat(spelled)
    except OSError:
        return spelled
    return new_parts if renaming and (st.st_dev, st.st_ino) == o.key else spelled


def check_may_add(o: Open, new_parts: list[str]) -> None:
    """A rename or a link adds a name to the new name's directory, as a CREATE there would:
    where a client stored a descriptor on that directory, it must grant this tree's token
    adding a file (a subdirectory, for a directory moved), else STATUS_ACCESS_DENIED (as
    Samba's check_parent_access_fsp, and NTFS). Without one the kernel decides, at the
    rename or link itself (made as the user)."""
    parent_sd = stored_sd(o.tree.fs, new_parts[:-1])
    if parent_sd is not None and acl.check(ADD_SUBDIRECTORY if o.is_dir else ADD_FILE, parent_sd, None,
                                           o.tree.token) < 0:
        raise SMBError(wire.STATUS_ACCESS_DENIED)


def check_may_replace(o: Open, target_parts: list[str]) -> None:
    """A rename or a link with ReplaceIfExists deletes the file it replaces: where a client
    stored a descriptor on that file, it must grant this tree's token DELETE (its own, or
    FILE_DELETE_CHILD on the directory), as a CREATE asking DELETE there or a delete on close
    must (NTFS opens the target for DELETE); else STATUS_ACCESS_DENIED. Without one the
    kernel decides, at the rename or link itself (made as the user)."""
    fs = o.tree.fs
    sd = stored_sd(fs, target_parts)
    if sd is None:
        return
    owner = acl.unix_user(fs.stat(target_parts).st_uid)
    if acl.check(wire.DELETE, sd, parent_descriptor(fs, target_parts), o.tree.token, owner) < 0:
        raise SMBError(wire.STATUS_ACCESS_DENIED)


def existing_target(o: Open, replace: bool, target: list[str]):
    """The key of the other file a rename with ReplaceIfExists would replace (`target`: its
    name on disk, `target_on_disk`), or None."""
    if not replace or target == o.parts:
        return None
    try:
        st = o.tree.fs.stat(target)
    except OSError:
        return None
    key = (st.st_dev, st.st_ino)
    return key if key != o.key else None


def rename_contended(c: Connection, o: Open, buf) -> list:
    """The other files whose leases lose HANDLE caching before a rename goes on (as Windows
    and Samba's `strict rename`): the file it replaces, the files open below a directory it
    moves."""
    replace, new_parts = new_name(o, buf)
    keys = [o2.key for o2 in c.state.opens_below(o.path())] if o.is_dir else []
    target = existing_target(o, replace, target_on_disk(o, new_parts))
    return keys + ([target] if target is not None else [])


def rename_stream(c: Connection, o: Open, buf):
    """FileRenameInformation through a named stream's handle (MS-FSA 2.1.5.14.11): the new
    name is another stream of the same file, ":name" or ":name:$DATA". A stream with that
    name is replaced only with ReplaceIfExists (else OBJECT_NAME_COLLISION), and never while
    it is open (ACCESS_DENIED); the stream's other opens must share delete. A full name
    (`file:name`) is refused as smbd refuses it (SHARING_VIOLATION: the stream's file is open,
    by this handle). The file's own data stream ("::$DATA"): `stream_default`, whose steps
    are returned (None otherwise: done)."""
    replace = bool(buf[0])
    name_len = struct.unpack_from("<I", buf, 16)[0]
    if 20 + name_len > len(buf):
        raise SMBError(wire.STATUS_INVALID_PARAMETER)
    name = wire.from_utf16(buf[20:20 + name_len])
    if not name.startswith(":"):
        raise SMBError(wire.STATUS_SHARING_VIOLATION)
    # (split_stream: PathError, OBJECT_NAME_INVALID; the data stream is no name it gives)
    target = None if name.casefold() == "::$data" else split_stream(name)[1]
    if not c.state.share_modes.others_share(o.key, id(o), sharemodes.DELETE):
        raise SMBError(wire.STATUS_SHARING_VIOLATION)
    if target is None:
        return stream_default.rename_to_default(c, o, replace)
    fs = o.tree.fs
    existing = next(((n, st) for n, st in fs.streams(o.base_key) if n.casefold() == target.casefold()), None)
    if existing is not None and existing[0] != o.stream:
        if (existing[1].st_dev, existing[1].st_ino) == o.key:
            pass        # this stream, its name spelled in another case
        elif not replace:
            raise SMBError(wire.STATUS_OBJECT_NAME_COLLISION)
        elif c.state.share_modes.count((existing[1].st_dev, existing[1].st_ino)):
            raise SMBError(wire.STATUS_ACCESS_DENIED)   # an open stream is never replaced
    if target == o.stream:
        return
    try:
        fs.rename_stream(o.base_key, o.stream, target, replace)
    except FileExistsError:
        raise SMBError(wire.STATUS_OBJECT_NAME_COLLISION) from None
    c.state.watches.post_open(o, notify.REMOVED, notify.FILE_NAME)     # (as the old stream's)
    # (only the name changes: the open keeps its descriptor, which work in flight still names)
    o.stream, o.parts = target, fs.stream_parts(o.base_key, target)
    c.state.moved(o)
    c.state.watches.post_open(o, notify.ADDED, notify.FILE_NAME)
    dirleases.open_changed(c, o)        # (as Samba: a stream's change breaks its file's directory's)


def target_is_read_only(fs: FileSystem, parts: list[str]) -> bool:
    """Whether a rename's target (`target_on_disk`) exists with the READONLY attribute (a file
    without write bits; a directory is never replaced anyway)."""
    try:
        st = fs.stat(parts)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and is_read_only(st)


def add_link(c: Connection, o: Open, buf) -> None:
    """FileLinkInformation (MS-FSA 2.1.5.14.6): a hard link to the open file, in the same
    share (a name is always relative to the open's share; the file system refuses one on
    another device). Directories and streams have no second names; a file already named so
    is replaced only with ReplaceIfExists, and never while it is open, a directory or
    read-only."""
    if o.is_dir:
        raise SMBError(wire.STATUS_FILE_IS_A_DIRECTORY)
    if o.stream is not None:
        raise SMBError(wire.STATUS_INVALID_PARAMETER)
    fs = o.tree.fs
    replace, new_parts = new_name(o, buf)
    if not new_parts:
        raise SMBError(wire.STATUS_OBJECT_NAME_INVALID)
    if len(new_parts) > 1 and not parent_is_directory(fs, new_parts):
        raise SMBError(wire.STATUS_OBJECT_PATH_NOT_FOUND)
    check_may_add(o, new_parts)
    spelled = target_on_disk(o, new_parts, renaming=False)
    try:
        existing = fs.stat(spelled)
    except (FileNotFoundError, NotADirectoryError):
        existing = None
        new_parts = spelled         # (a new name: in the case `preserve case` gives it)
    replaced = None
    if existing is not None:
        if (existing.st_dev, existing.st_ino) == o.key:
            return                                  # already a name of this file
        if not replace:
            raise SMBError(wire.STATUS_OBJECT_NAME_COLLISION)
        if stat.S_ISDIR(existing.st_mode) or not existing.st_mode & 0o222 or \
                c.state.share_modes.count((existing.st_dev, existing.st_ino)):
            raise SMBError(wire.STATUS_ACCESS_DENIED)
        check_may_replace(o, spelled)
        new_parts, replaced = spelled, streams_going_with(fs, spelled)
    try:
        fs.link(o.parts, new_parts, replace, key=o.key)     # (the name must still be the open's file)
    except FileExistsError:
        raise SMBError(wire.STATUS_OBJECT_NAME_COLLISION)
    except OSError as e:
        if e.errno == errno.EXDEV:
            raise SMBError(STATUS_NOT_SAME_DEVICE)
        raise
    fs.remove_streams(replaced)      # the streams of the file it replaced
    c.state.watches.post("/".join([fs.root] + new_parts), notify.ADDED, notify.FILE_NAME)
    # the new name's directory (the file's times a listing of the old one shows change too)
    spared = dirleases.exempt(c, o)
    dirleases.entry_changed(c, fs, new_parts, spared)
    dirleases.open_changed(c, o, spared)


# the access each settable file information class needs (MS-SMB2 3.3.5.21.1)
SET_INFO_NEEDS = {4: wire.FILE_WRITE_ATTRIBUTES, 10: wire.DELETE, 13: wire.DELETE, 15: wire.FILE_WRITE_EA,
                  19: wire.FILE_WRITE_DATA, 20: wire.FILE_WRITE_DATA}


# FileBasicInformation times (MS-FSA 2.1.5.14.2): 0 leaves a time as it is, -1 also stops the
# handle's own operations from moving it, -2 lets them again; below -2 is malformed
TIME_LEAVE, TIME_FREEZE, TIME_THAW = 0, -1, -2


def set_basic(o: Open, buf, write_times: WriteTimes) -> None:
    """FileBasicInformation: times and attributes (0 leaves the attributes as they are), the
    file's, through a stream's handle too (`file_of`)."""
    ctime_set, atime, mtime, change, attrs = struct.unpack_from("<qqqqI", buf, 0)
    if min(ctime_set, atime, mtime, change) < TIME_THAW:
        raise SMBError(wire.STATUS_INVALID_PARAMETER)
    with file_of(o) as fd:
        set_file_basic(o, fd, (ctime_set, atime, mtime, change, attrs), write_times)


def set_file_basic(o: Open, fd: int, fields: tuple, write_times: WriteTimes) -> None:
    """`set_basic` on the file's descriptor `fd` (the open's own, or its stream's file's);
    the handle's pending write and the write time it keeps are the open's own."""
    fs = o.tree.fs
    ctime_set, atime, mtime, change, attrs = fields
    st = fs.fstat(fd) if fd != o.fd else None
    is_dir = o.is_dir if st is None else stat.S_ISDIR(st.st_mode)
    key = o.key if st is None else (st.st_dev, st.st_ino)
    if attrs & wire.ATTR_DIRECTORY and not is_dir or attrs & wire.ATTR_TEMPORARY and is_dir:
        raise SMBError(wire.STATUS_INVALID_PARAMETER)
    keep = (TIME_LEAVE, TIME_FREEZE, TIME_THAW)
    # whatever it sets (nothing at all too), it shows the handle's pending write (as Windows
    # Server 2016 does)
    shown = write_times.show_now(o)
    if shown is not None:
        keep_write_time(fs, fd, shown, o.tree.share)      # (a stream's writes: its file's)
    # a write time set or frozen here is one this handle's own writes no longer move; thawing
    # lets them again
    if mtime == TIME_THAW:
        o.kept_write_ns = None
    elif mtime == TIME_FREEZE:
        o.kept_write_ns = write_times.shown(key) or fs.fstat(fd).st_mtime_ns
    elif mtime != TIME_LEAVE:
        o.kept_write_ns = wire.unix_ns(mtime)
        write_times.set_by_client(key, o.kept_write_ns)
    if atime not in keep or mtime not in keep:
        if ctime_set in keep:
            pin_creation_time(fs, fd)     # (it may come from the write time)
        st = fs.fstat(fd)
        a = wire.unix_ns(atime) if atime not in keep else st.st_atime_ns
        m = wire.unix_ns(mtime) if mtime not in keep else st.st_mtime_ns
        set_file_times(o.tree.share, fs, fd, a, m)
    if ctime_set in keep and change in keep and not attrs:
        return
    dos = fs.get_dos(fd) or DosInfo()
    if ctime_set not in keep:
        dos.create_time = ctime_set
    if change not in keep:
        dos.change_time, dos.change_mtime_ns = change, stored_ns(fs.fstat(fd).st_mtime_ns)
    mode = fs.fstat(fd).st_mode & 0o7777
    want_mode = mode
    if attrs:
        dos.attrs = (attrs & STORED_ATTRIBUTES or wire.ATTR_NORMAL) | dos.attrs & ATTR_SPARSE_FILE
        if not is_dir:      # a file's READONLY lives in its write bits (see fileinfo)
            # cleared: the owner's back, where the share lets a file have it (its create mask
            # and force create mode, as Samba's unix_mode: `create mask = 0444` keeps every
            # file read-only whatever a client asks)
            share = o.tree.share
            writable = 0o200 & share.create_mask | share.force_create_mode & 0o222
            want_mode = mode & ~0o222 if attrs & wire.ATTR_READONLY else mode | (0 if mode & 0o222 else writable)
    # the write bits go last when they are dropped and first when they come back: the DOS
    # information is an xattr, which the kernel lets only an account that may write store
    if want_mode != mode and want_mode & 0o200:
        set_read_only_bits(fs, fd, want_mode)
    writable_for_metadata(fs, fd, lambda: fs.set_dos(fd, dos))
    if want_mode != mode and not want_mode & 0o200:
        set_read_only_bits(fs, fd, want_mode)


def set_read_only_bits(fs, fd: int, mode: int) -> None:
    """The write bits that READONLY is (`mode` differs from the file's in them only): as the
    account, else (POSIX lets only the owner chmod) as Windows lets anyone the open's
    FILE_WRITE_ATTRIBUTES was granted to, which SET_INFO checked (FileSystem.set_write_bits,
    as Samba stores the attribute with its own rights then)."""
    try:
        fs.fchmod(fd, mode)
    except PermissionError:
        fs.set_write_bits(fd, mode)


def h_set_info(c: Connection, hdr: Header, msg: bytes, rhdr: Header, chain,
               held_since: float | None = None):
    """SET_INFO; `held_since`: again, after waiting (since then) for lease breaks."""
    _size, info_type, klass, length, off = struct.unpack_from("<HBBIH", msg, 64)
    o = c.open_for(bytes(msg[80:96]), chain, hdr)
    tree = c.tree(hdr)
    if tree.share.read_only:
        raise SMBError(wire.STATUS_ACCESS_DENIED)
    buf = in_request(msg, off, length)
    if info_type == wire.INFO_FILE and klass in BY_NAME_CHANGES:
        c.state.catch_up_renames(o.key)         # (as h_query_info's)
    if info_type == wire.INFO_SECURITY:
        parts = struct.unpack_from("<I", msg, 64 + 12)[0]     # AdditionalInformation
        needs = ((acl.WRITE_DAC if parts & acl.DACL else 0) |
                 (acl.WRITE_OWNER if parts & (acl.OWNER | acl.GROUP) else 0) |
                 (acl.ACCESS_SYSTEM_SECURITY if parts & acl.SACL else 0))
        if not needs or o.granted & needs != needs:
            raise write_refused(o.tree.share) if needs else SMBError(wire.STATUS_ACCESS_DENIED)
        try:
            new = acl.parse(buf)
        except acl.BadDescriptor:
            raise SMBError(wire.STATUS_INVALID_PARAMETER)
        if not tree.share.nt_acl_support:
            return struct.pack("<H", 2), None   # stores nothing (`nt acl support = no`, as smbd)
        parts, new, mode = macos_descriptor(tree, parts, new)
        # (through a stream's handle: its file's descriptor, stored as the user, whom the
        # kernel lets store it only where he may write the file, as through the file's own)
        with file_of(o) as fd:
            # the mode first: only its owner may change it (the kernel's check, as the user),
            # and a request refused so changes nothing
            if mode is not None:
                tree.fs.fchmod(fd, tree.fs.fstat(fd).st_mode & 0o7000 | mode)
            if parts:
                current = current_sd(o, fd)
                # the owner named may only be the file's Unix owner, who holds the owner's
                # rights (or stay as it is); root may name any Unix user, who gets the file
                # (unix_owner)
                if parts & acl.OWNER and new.owner:
                    unix_owner.follow_owner(tree.fs, fd, tree.token, new.owner, current.owner,
                                            tree.share.force_unknown_acl_user)
                if parts & acl.GROUP and new.group and new.group != current.group:
                    unix_owner.follow_group(tree.fs, fd, new.group, tree.share.force_unknown_acl_user)
                blob = acl.merge(current, new, parts,
                                 tree.share.acl_flag_inherited_canonicalization).pack()
                writable_for_metadata(tree.fs, fd, lambda: tree.fs.set_sd(fd, blob))
        c.state.watches.post_open(o, notify.MODIFIED, notify.SECURITY)
        dirleases.open_changed(c, o)    # (what a listing shows may depend on it: hide unreadable)
        return struct.pack("<H", 2), None
    if info_type != wire.INFO_FILE:
        raise SMBError(wire.STATUS_NOT_SUPPORTED)
    fs = tree.fs
    needs = SET_INFO_NEEDS.get(klass, 0)
    clearing_delete = klass == 13 and buf[:1] == b"\0"     # (undoing a delete needs nothing)
    if needs and not clearing_delete and not o.granted & needs:
        raise write_refused(o.tree.share)
    renaming = klass == 10 and o.stream is None
    deleting = klass == 13 and buf[:1] not in (b"", b"\0") and bool(o.parts)
    if renaming or deleting:    # other clients' handle leases are broken first, and answer
        setinfo_hold.wait_for_handle_breaks(
            c, msg, o, rename_contended(c, o, buf) if renaming else [], held_since,
            lambda h, m, r, ch, since: h_set_info(c, h, m, r, ch, held_since=since))
    if klass == 4:  # Basic: times (0 = leave, -1 = freeze, -2 = thaw) and attributes (0 = leave)
        set_basic(o, buf, c.state.write_times)
        ctime_set, atime, mtime, change, attrs = struct.unpack_from("<QQQQI", buf, 0)
        unset = (0, 0xFFFFFFFFFFFFFFFF, 0xFFFFFFFFFFFFFFFE)
        changed = ((notify.CREATION if ctime_set not in unset else 0) | (notify.ATTRIBUTES if attrs else 0)
                   | (notify.LAST_ACCESS if atime not in unset else 0)
                   | (notify.LAST_WRITE if mtime not in unset else 0))
        if changed:
            c.state.watches.post_open(o, notify.MODIFIED, changed)
        if changed or change not in unset:      # (a listing shows the change time too)
            dirleases.open_changed(c, o)
    elif klass == 10:  # Rename: needs DELETE access, and every other open must share delete
        if o.stream is not None:
            steps = rename_stream(c, o, buf)
            return (steps if steps is not None else struct.pack("<H", 2)), o.fid
        if not c.state.share_modes.others_share(o.key, id(o), sharemodes.DELETE):
            raise SMBError(wire.STATUS_SHARING_VIOLATION)
        if not o.is_dir and open_streams(c, fs, o.parts, o.key, opens_here=1):
            # a file is not renamed under its open streams (as Windows and smbd: their
            # handles reach the file by its name)
            raise SMBError(wire.STATUS_ACCESS_DENIED)
        parent = fs.stat(o.parts[:-1])
        if c.state.share_modes.blocks_child_rename((parent.st_dev, parent.st_ino)):
            raise SMBError(wire.STATUS_SHARING_VIOLATION)
        if o.is_dir and c.state.has_open_below(o.path()):
            raise SMBError(wire.STATUS_ACCESS_DENIED)   # a file inside it is open
        replace, new_parts = new_name(o, buf)
        if len(new_parts) > 1 and not parent_is_directory(fs, new_parts):
            # (as a link's: the new name's directory is not there; smbd and Windows answer so)
            raise SMBError(wire.STATUS_OBJECT_PATH_NOT_FOUND)
        if new_parts:
            check_may_add(o, new_parts)
            # another file named so in another case is the file the name reaches: refused
            # without ReplaceIfExists, else replaced (never a second name beside it that
            # differs only in case, which no client could tell apart)
            new_parts = target_on_disk(o, new_parts, tunnel=c.state.tunnel)
        replacing = replace and new_parts != o.parts
        replaced = streams_going_with(fs, new_parts) if replacing else None
        if replacing and target_is_read_only(fs, new_parts):
            raise SMBError(wire.STATUS_ACCESS_DENIED)   # a READONLY file is never replaced
        if replacing:
            check_may_replace(o, new_parts)
        target = existing_target(o, replace, new_parts)
        if target is not None and c.state.share_modes.count(target):
            raise SMBError(wire.STATUS_ACCESS_DENIED)   # nor one still open (MS-FSA 2.1.5.14.11)
        try:
            fs.rename(o.parts, new_parts, bool(replace), key=o.key)   # (as link's)
        except FileExistsError:
            raise SMBError(wire.STATUS_OBJECT_NAME_COLLISION)
        fs.remove_streams(replaced)      # the streams of the file it replaced
        old_path, old_parts = o.path(), o.parts
        o.parts = o.base_parts = new_parts      # (a stream is never renamed: refused above)
        c.state.renamed(o, old_parts)           # (and the file's other opens with it)
        if tree.share.mangled_names and old_parts != new_parts:
            c.state.tunnel.removed((parent.st_dev, parent.st_ino), old_parts[-1], tree.token.owner)
        c.state.watches.post_rename(old_path, o.path(), o.is_dir)
        # the directory left (known by its id: its name may be what moved) and the one entered
        spared = dirleases.exempt(c, o)
        if c.state.oplocks.directory_leases():
            c.state.oplocks.break_directory((parent.st_dev, parent.st_ino), spared,
                                             old_parts[-1] if old_parts else None)
        dirleases.entry_changed(c, fs, new_parts, spared)
    elif klass == 11:  # Link: another name for the file
        add_link(c, o, buf)
    elif klass == 13:  # Disposition
        if buf[0] and not o.parts:
            raise SMBError(wire.STATUS_ACCESS_DENIED)      # the share's root is never deleted
        if buf[0] and file_is_read_only(o):
            raise SMBError(wire.STATUS_CANNOT_DELETE)      # (MS-FSA 2.1.5.14.3)
        if buf[0] and o.is_dir and not vetoed_entries.counts_as_empty(fs, tree.names, o.fd,
                                                                      tree.share.delete_veto_files):
            raise SMBError(wire.STATUS_DIRECTORY_NOT_EMPTY)
        o.delete_on_close = bool(buf[0])
        c.state.set_delete_pending(o, o.delete_on_close)    # for every open, as on Windows
    elif klass == 15:  # FullEa: set or (with an empty value) remove; the file's, through a stream too
        if not tree.share.ea_support:
            raise SMBError(wire.STATUS_EAS_NOT_SUPPORTED)
        eas = parse_eas(buf)
        with file_of(o) as fd:
            store_eas(fs, fd, eas)
        c.state.watches.post_open(o, notify.MODIFIED, notify.EA)
        dirleases.open_changed(c, o)    # (a listing shows EaSize)
    elif klass == 20 and tree.share.fruit and aapl.is_afp_info(o.stream):
        # an AfpInfo keeps its 60 bytes: a size past them is refused, any other changes nothing
        # (as macOS's server and Samba's vfs_fruit answer)
        if file_size(buf) > aapl.AFP_INFO_SIZE:
            raise SMBError(wire.STATUS_ALLOTTED_SPACE_EXCEEDED)
    elif klass == 20:  # EndOfFile
        c.state.oplocks.contend_level2(o.key, o)
        fs.ftruncate(o.fd, file_size(buf))
        if o.kept_write_ns is not None:
            keep_write_time(fs, o.fd, o.kept_write_ns, o.tree.share)
        else:
            c.state.write_times.modified_now(o)     # (the kernel's time is now too)
        c.state.watches.post_open(o, notify.MODIFIED, notify.SIZE | notify.LAST_WRITE)
        dirleases.open_changed(c, o)
    elif klass == 19:  # Allocation: below the end of file it truncates, above it reserves
        wanted = file_size(buf)
        if not o.is_dir:
            c.state.oplocks.contend_level2(o.key, o)    # grown or shrunk (Samba: LEVEL2_CONTEND_ALLOC_*)
            if wanted < fs.fstat(o.fd).st_size:
                fs.ftruncate(o.fd, wanted)
            set_allocation(fs, o.fd, wanted, o.tree.share.strict_allocate)
            dirleases.open_changed(c, o)    # (a listing shows AllocationSize)
    elif klass == 14:  # Position (CurrentByteOffset)
        o.position = struct.unpack_from("<Q", buf, 0)[0]
    elif klass == 16:  # Mode: only the flags a handle may change (MS-FSCC 2.4.26)
        mode = struct.unpack_from("<I", buf, 0)[0]
        if mode & ~(0x2 | 0x4 | 0x10 | 0x20):
            raise SMBError(wire.STATUS_INVALID_PARAMETER)
        o.mode = mode
    else:
        raise SMBError(wire.STATUS_INVALID_INFO_CLASS)
    return struct.pack("<H", 2), o.fid      # (the FileId a held request's compound goes on with)
