"""CREATE and CLOSE (MS-SMB2 3.3.5.9, 3.3.5.10)."""
from __future__ import annotations

import dataclasses
import logging
import os
import stat
import struct
from codecs import utf_16_le_decode
from typing import TYPE_CHECKING, Callable

from smbring.smb import aapl, acl, appledouble, dfs, dirleases, leasing, notify, sharemodes, unix_owner, wire
from smbring.smb.commands import create_durable, negotiate, oplock_break, pipe
from smbring.smb.contexts import (
    encode_create_contexts,
    parse_create_contexts,
    parse_eas,
)
from smbring.smb.eas import store_eas
from smbring.smb.effects import FileSteps
from smbring.smb.errors import SMBError, in_request
from smbring.smb.fileinfo import (
    ATTR_SPARSE_FILE,
    NT_EPOCH,
    ROOT_UUID,
    NETWORK_OPEN_INFO,
    STORED_ATTRIBUTES,
    creation_time,
    file_of,
    is_read_only,
    network_open_info,
    show_on_close,
    writable_for_metadata,
)
from smbring.smb.fs import MAX_STREAMS, MAY_READ, MAY_WRITE, DosInfo, FileSystem, split_path, split_stream
from smbring.smb.oplocks import LEVEL_LEASE
from smbring.smb.state import AsyncRequest, Chain, GoAsync, Open, make_open
from smbring.smb.wire import Header

if TYPE_CHECKING:
    from smbring.smb.connection import Connection
    from smbring.smb.tunnel import NameTunnel

log = logging.getLogger("smbring.smb")
# the streams an open of which takes the file's "._" file in first (smb.appledouble)
APPLE_STREAMS = (aapl.AFP_INFO_STREAM, aapl.RESOURCE_FORK_STREAM)


def _may_delete(access: int) -> bool:
    return bool(access & (wire.DELETE | wire.GENERIC_ALL | wire.MAXIMUM_ALLOWED))


def set_allocation(fs: FileSystem, fd: int, size: int, strict: bool) -> None:
    """AllocationSize (the AlSi create context, FileAllocationInformation): the size remembered
    to report it back; with Samba's `strict allocate`, disk space reserved too (without
    changing the file's size, where the file system can). Not by default: space reserved
    beyond a file's size is space a client can take without writing it (as in Samba)."""
    if strict:
        fs.allocate(fd, size)
    dos = fs.get_dos(fd) or DosInfo()
    dos.allocation = size
    fs.set_dos(fd, dos)


def stored_sd(fs: FileSystem, parts: list[str]) -> "acl.Descriptor | None":
    """The security descriptor a client set on the file (or directory), if any."""
    try:
        fd = fs.open(parts, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError:
        return None
    try:
        return sd_of(fs, fd, "/".join(parts))
    except OSError:
        return None
    finally:
        fs.close_file(fd)


def parent_descriptor(fs: FileSystem, parts: list[str]) -> "acl.Descriptor":
    """What the directory of the file at `parts` grants its children by (acl.check's
    `parent`: DELETE from FILE_DELETE_CHILD): its stored descriptor, else its mode's."""
    return stored_sd(fs, parts[:-1]) or acl.from_mode(fs.stat(parts[:-1]))


def refused_by_the_kernel(fs: FileSystem, parts: list[str], access: int) -> None:
    """A file without a stored security descriptor is judged by the kernel when it is opened,
    which comes after the oplock breaks and the closing of detached durable opens that the
    open needs: an open the account may not make must start neither (as Windows, which checks
    access before it breaks anything), so its read and write rights are asked first."""
    mapped = acl.map_generic(access)
    mode = ((MAY_READ if mapped & (wire.FILE_READ_DATA | wire.FILE_EXECUTE) else 0)
            | (MAY_WRITE if mapped & (wire.FILE_WRITE_DATA | wire.FILE_APPEND_DATA) else 0))
    if mode and not fs.may_open(parts, mode):
        raise SMBError(wire.STATUS_ACCESS_DENIED)


def opened_for_metadata(fs: FileSystem, parts: list[str], is_dir: bool, keep: bool, root_st=None):
    """An existing file's stored security descriptor and DOS information, read through one
    open of it: (fd and stat, descriptor, DOS information), with ((None, None), None, None)
    when it cannot be opened. With `keep` the fd is opened as a read-only open of the file
    is (O_RDONLY, O_DIRECTORY for a directory) and left open, for the CREATE to take as its
    own; else it is closed (None in its place; the stat still says which file the metadata
    is of, for `moved`). `root_st`: the share root's stat, for the
    root (parts []): "." beneath the root's own descriptor opens that very directory, so
    the stat already read is the fd's, and no fstat is asked again."""
    flags = os.O_RDONLY | (os.O_DIRECTORY if is_dir else 0) if keep else os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY
    try:
        if root_st is not None and not parts:
            fd, st = fs.open(parts, flags), root_st
        else:
            fd, st = fs.open_stat(parts, flags)
    except OSError:
        return (None, None), None, None
    try:
        blob, dos = fs.get_sd_and_dos(fd, st.st_dev)     # (one flistxattr where it can tell)
        metadata = parsed_sd(blob, parts), dos
    except OSError:
        metadata = None, None
    except BaseException:
        fs.close_file(fd)
        raise
    if not keep:
        fs.close_file(fd)
        return (None, st), *metadata
    return (fd, st), *metadata


# times a CREATE is made again where its name was given to another file while it ran (`moved`)
MOVED_RETRIES = 3


def moved(st, other) -> bool:
    """Whether two stats of one name are of two files: another process (another worker, another
    server on the directory) renamed a file over the name between two lookups of it."""
    return (st.st_dev, st.st_ino) != (other.st_dev, other.st_ino)


def parent_metadata(fs: FileSystem, parts: list[str]) -> tuple[bool, "acl.Descriptor | None", bool]:
    """Whether the directory a new name would go in exists (and is a directory), the
    security descriptor a client set on it, and whether it has a default POSIX ACL: one open
    for all where the account may read the directory; else its type from a stat (which
    raises what the path's lookup does), no descriptor and no default ACL, as
    `parent_is_directory` and `stored_sd` each give them."""
    try:
        fd = fs.open(parts[:-1], os.O_RDONLY | os.O_DIRECTORY)
    except (FileNotFoundError, NotADirectoryError):
        return False, None, False
    except OSError:
        return len(parts) <= 1 or parent_is_directory(fs, parts), None, False
    try:
        return directory_metadata(fs, fd, parts)
    finally:
        fs.close_file(fd)


def directory_metadata(fs: FileSystem, fd: int, parts: list[str]) -> tuple[bool, "acl.Descriptor | None", bool]:
    """`parent_metadata` of the new name `parts`, its directory open as `fd`."""
    inherits = fs.has_default_acl(fd)
    try:
        return True, sd_of(fs, fd, parts[:-1]), inherits     # (joined only to be logged)
    except OSError:
        return True, None, inherits


def snapshot_tree(c, tree, timewarp: bytes):
    """The tree a CREATE with a timewarp token (TWrp: the time of a previous version, a
    FILETIME) opens its file in: the share as the snapshot taken then holds it, read-only,
    reached as the tree's account (vfs.shadow_copy). STATUS_OBJECT_NAME_NOT_FOUND where the
    share has no such snapshot (MS-SMB2 3.3.5.9.7)."""
    options = tree.share.shadow_copy
    seconds = (int.from_bytes(timewarp[:8], "little") - NT_EPOCH) // 10_000_000
    directory = c.state.snapshots.at(options, tree.share.path, seconds) if options is not None else None
    if directory is None:
        raise SMBError(wire.STATUS_OBJECT_NAME_NOT_FOUND)
    share = dataclasses.replace(tree.share, path=directory, read_only=True, shadow_copy=None, snapshot=True)
    return dataclasses.replace(tree, share=share, fs=c.share_fs(share, getattr(tree.fs, "identity", None)),
                               counted=None, time_machine_counted={})


def spelled_in_directory(fs: FileSystem, parts: list[str], metadata: bool,
                         short_names: bool = True, tunnel: NameTunnel | None = None,
                         user: bytes = b"") -> tuple[list[str], tuple | None]:
    """`fs.match_case(parts)` for a name not found as spelled (a long name's 8.3 short name
    too: the caller checks `veto files` on the names found), and, where `metadata` is asked
    and the name is in its directory in no other case, that directory's `parent_metadata`:
    one open of the directory for both (the one match_case makes, as the user, to look the
    name up in it). Where it cannot be opened: match_case's own walk, and no metadata (None:
    `parent_metadata` answers for a directory it cannot open). `short_names`: the share's
    `mangled names`; a new name (`metadata`) that is the short name of a long name `user`
    just removed from the directory is that long name (`tunnel`: smb.tunnel)."""
    if not parts:
        return fs.match_case(parts), None
    try:
        fd = fs.open(parts[:-1], os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return fs.match_case(parts, short_names=short_names), None
    try:
        match = fs.match_case_in(fd, parts[-1], short_names=short_names)
        if match is None and metadata and short_names and tunnel is not None:
            match = tunnel.found(fs, parts, user)
        if match is not None and match != parts[-1]:
            return parts[:-1] + [match], None
        return parts, directory_metadata(fs, fd, parts) if metadata else None
    finally:
        fs.close_file(fd)


def stream_of_file(fs: FileSystem, share, parts: list[str], is_dir: bool, access: int, options: int,
                   disposition: int, attrs: int, create: bool, token,
                   made: bool = False) -> tuple[str | None, int, os.stat_result, DosInfo | None]:
    """A named stream's id, the most an open of it may be granted, and the file's stat (its
    owner owns a new stream: see FileSystem.create_stream) and DOS information (the stream's
    open shows the file's times and attributes). The most granted: what this user's open
    of the stream's file would have (as Samba's streams_xattr, whose streams are the file's
    xattrs), judged on the very file whose id is read, opened as the user: reading by that
    open (STATUS_ACCESS_DENIED where the kernel refuses it: a stream needs its file readable),
    writing by the kernel's answer for it (mode bits, POSIX ACLs, groups), a descriptor a
    client stored on it, its READONLY attribute and a read-only share. An open that asks to
    write (or truncate, or delete) a stream of a file it may not write is refused; else its
    open gets reading rights only. The stream itself is a file of the server's (the depot),
    opened by the server: this is the check that guards it. The id is made (`create`) only
    where the file may be written; None where there is none. `made`: the file was made by this
    CREATE (`create_file_of_stream`, which stored its id): its creator's open is granted what
    it asks for, as a plain CREATE's of a new file is, whatever the file's new descriptor or
    READONLY attribute say about later opens."""
    try:
        fd, st = fs.open_stat(parts, os.O_RDONLY | (os.O_DIRECTORY if is_dir else 0))
    except PermissionError:
        raise SMBError(wire.STATUS_ACCESS_DENIED) from None
    try:
        if made:
            return fs.stream_id_of(fd), acl.check(acl.MAXIMUM_ALLOWED, None, None, token), st, fs.get_dos(fd)
        blob, dos = fs.get_sd_and_dos(fd, st.st_dev)
        sd = parsed_sd(blob, parts)
        truncating = disposition in TRUNCATING
        checked_access = access | (wire.FILE_WRITE_DATA if truncating else 0)
        check_read_only(st, dos, access, options, disposition, attrs)
        parent = None
        if sd is not None:
            parent = parent_descriptor(fs, parts)
        # (its Unix owner holds the owner's rights: without a descriptor, WRITE_DAC is his only)
        owner = acl.unix_user(st.st_uid)
        if acl.check(checked_access, sd, parent, token, owner) < 0:
            raise SMBError(wire.STATUS_ACCESS_DENIED)
        limit = acl.check(acl.MAXIMUM_ALLOWED, sd, parent, token, owner)
        writable = (not share.read_only and not (not is_dir and is_read_only(st, dos))
                    and limit & wire.FILE_WRITE_DATA and fs.may_access_open(fd, MAY_WRITE))
        if not writable:
            if acl.map_generic(access) & wire.WRITE_CLASS or truncating or options & wire.FILE_DELETE_ON_CLOSE:
                raise SMBError(wire.STATUS_ACCESS_DENIED)
            limit &= wire.READ_ONLY_ACCESS
        return fs.stream_id_of(fd, create=bool(create and writable)), limit, st, dos
    finally:
        fs.close_file(fd)


def take_appledouble(c, tree, parts: list[str], st: os.stat_result) -> None:
    """The "._" file beside the file at `parts` (`st`: its stat) taken into its streams, where
    the share does so (smb.appledouble), the account's right to write them judged as an open
    that writes one is (stream_of_file)."""
    if not appledouble.converts(tree, parts):
        return

    def streams_to_write():
        sid, limit, file_st, _dos = stream_of_file(tree.fs, tree.share, parts, stat.S_ISDIR(st.st_mode),
                                                   wire.FILE_WRITE_DATA, 0, wire.FILE_OPEN, 0, True, tree.token)
        return sid, limit, file_st
    appledouble.convert(c, tree, parts, st, streams_to_write)


def open_streams(c, fs: FileSystem, parts: list[str], key: tuple, opens_here: int = 0) -> list[tuple]:
    """The keys of the file's named streams that are open (the file `key` at `parts`). Only
    looked for where the file has more opens than `opens_here` (the caller's own): a
    stream's open is one of its file's too (ServerState.register_open)."""
    if c.state.share_modes.count(key) <= opens_here:
        return []
    try:
        streams = fs.streams(fs.stream_id(parts))
    except OSError:
        return []
    keys = ((st.st_dev, st.st_ino) for _name, st in streams)
    return [k for k in keys if c.state.share_modes.count(k)]


def streams_refuse_delete(c, fs: FileSystem, parts: list[str], key: tuple) -> bool:
    """Whether an open of the file that may delete it meets an open of one of its named
    streams that does not share delete: deleting a file deletes its streams, so the open is
    refused as an open of each stream asking DELETE would be (MS-FSA 2.1.5.1.2: a stream's
    opens and its file's check each other for delete; Samba's open_streams_for_delete)."""
    everything = sharemodes.READ | sharemodes.WRITE | sharemodes.DELETE
    return any(not c.state.share_modes.allowed(k, wire.DELETE, everything)
               for k in open_streams(c, fs, parts, key))


def create_file_of_stream(fs: FileSystem, share, parts: list[str], attrs: int, contexts: dict,
                          eas: list[tuple[str, bytes]], token) -> None:
    """The file a CREATE of `name:stream` makes where `name` does not exist, made as a plain
    CREATE of `name` makes it: its directory's stored DACL must grant adding a file; its
    descriptor is the SecD context's (checked and completed as for a plain CREATE) or the one
    its directory's inheritable ACEs give; its mode the create mask's (READONLY: no write
    bits), or the kernel's from the directory's default POSIX ACL; its DOS attributes,
    creation time and the ExtA context's EAs (`eas`) stored. Its stream id is stored too,
    while the creating descriptor is open (a READONLY file is not the user's to write after).
    All of it before the file is left to anyone: a file whose descriptor (or anything else)
    cannot be stored is removed again (mode 0 first), never left with its mode bits alone
    speaking for it."""
    _is_dir, parent_sd, acl_decides_mode = parent_metadata(fs, parts)
    if parent_sd is not None and acl.check(ADD_FILE, parent_sd, None, token) < 0:
        raise SMBError(wire.STATUS_ACCESS_DENIED)   # the directory's DACL forbids adding here
    new_sd = new_descriptor(contexts, parent_sd, False, token, share.force_unknown_acl_user,
                            share.nt_acl_support)
    mode = new_file_mode(share, bool(attrs & wire.ATTR_READONLY), inherited_mode(fs, share, parts))
    fd = fs.open(parts, os.O_CREAT | os.O_EXCL | os.O_RDWR, mode if acl_decides_mode else 0o600)
    try:
        if not acl_decides_mode:
            fs.fchmod(fd, mode)
        if new_sd is not None:
            unix_owner.give_named_owner_and_group(fs, fd, contexts, share.force_unknown_acl_user)
            writable_for_metadata(fs, fd, lambda: fs.set_sd(fd, new_sd.pack()))
        store_new_file_dos(fs, fd, attrs, False)
        store_eas(fs, fd, eas)
        writable_for_metadata(fs, fd, lambda: fs.stream_id_of(fd, create=True))
        heir = unix_owner.directory_owner(fs, share, parts)
        if heir is not None:
            fs.give_new_file(fd, heir[0])
    except BaseException:
        unmake(fs, parts, fd)
        raise
    finally:
        fs.close_file(fd)


def new_descriptor(contexts: dict, parent_sd: "acl.Descriptor | None", is_dir: bool,
                   token, unknown_ok: bool = False, client_sets: bool = True) -> "acl.Descriptor | None":
    """The security descriptor of a file or directory a CREATE makes: the SecD context's,
    checked (STATUS_INVALID_PARAMETER for one that does not parse, STATUS_INVALID_OWNER for
    an owner the creator may not name) and completed from its directory's (`parent_sd`);
    else the one its directory's inheritable ACEs give. None where neither gives one (its
    mode bits then speak for it). `unknown_ok` (the share's `force unknown acl user`): an
    owner or group that is no Unix account may be named (the file keeps the creator's).
    `client_sets` false (`nt acl support = no`): the SecD context is not looked at (as smbd;
    what the directory's descriptor hands down still is, so that no file is made more open
    than its directory's inheritable ACEs say)."""
    if b"SecD" not in contexts or not client_sets:
        return acl.inherit(parent_sd, is_dir, token)
    try:
        new_sd = acl.parse(contexts[b"SecD"])
    except acl.BadDescriptor:
        raise SMBError(wire.STATUS_INVALID_PARAMETER)
    if new_sd.sacl_raw is not None:
        # a SACL is set with ACCESS_SYSTEM_SECURITY, which no open holds (SET_INFO refuses it
        # so): none is stored by a CREATE either (Samba: STATUS_ACCESS_DENIED)
        raise SMBError(wire.STATUS_ACCESS_DENIED)
    if new_sd.owner and not acl.may_name_owner(token, new_sd.owner, token.owner) and \
            not (unknown_ok and acl.unix_user_id(new_sd.owner) is None):
        raise SMBError(wire.STATUS_INVALID_OWNER)    # (the creator owns the new file)
    if new_sd.group and new_sd.group != token.group:  # one of the creator's groups (root: any)
        if acl.unix_group_id(new_sd.group) is None:
            if unknown_ok:
                return acl.complete(new_sd, parent_sd, is_dir, token)
            raise SMBError(wire.STATUS_INVALID_OWNER)
        if new_sd.group not in token and acl.ROOT_SID not in token:
            raise SMBError(wire.STATUS_ACCESS_DENIED)
    return acl.complete(new_sd, parent_sd, is_dir, token)


def unmake(fs: FileSystem, parts: list[str], fd: int, is_dir: bool = False) -> None:
    """Undoes the creation of the file (or directory) open as `fd` at `parts`, best effort:
    no one may open it (mode 0, on the very file), and its name goes where it still names
    that file (a directory someone filled meanwhile stays, mode 0, and is logged)."""
    try:
        fs.fchmod(fd, 0)
        st = fs.fstat(fd)
        named = fs.stat(parts)
        if (named.st_dev, named.st_ino) == (st.st_dev, st.st_ino):
            fs.remove(parts, is_dir)
    except OSError as e:
        log.warning("%s: a file half made left behind (mode 0): %s", "/".join(parts), e)


def store_new_file_dos(fs: FileSystem, fd: int, attrs: int, is_dir: bool) -> DosInfo | None:
    """The DOS information of a file or directory this CREATE made, stored in one write: the
    attributes asked for (ARCHIVE with them, on a file) and the creation time the stat gives
    now, pinned before writes move the times (`pin_creation_time`). A refusal to store the
    attributes fails the CREATE; the creation time alone is best effort. Returns what is
    stored now (read back where the write failed)."""
    wanted = attrs & STORED_ATTRIBUTES
    dos = DosInfo(attrs=wanted | (0 if is_dir else wire.ATTR_ARCHIVE) if wanted else 0)
    try:
        dos.create_time = creation_time(fs.fstat(fd), dos)
        writable_for_metadata(fs, fd, lambda: fs.set_dos(fd, dos))
        return dos
    except OSError:
        if wanted:
            raise
    return fs.get_dos(fd)


def sd_of(fs: FileSystem, fd: int, where: "str | list[str]") -> "acl.Descriptor | None":
    """The descriptor stored on an open file, if any (an unreadable one is ignored, loudly;
    an error reading it is raised). `where`: the file's path for the log, or its parts
    (joined only to be logged)."""
    return parsed_sd(fs.get_sd(fd), where)


def parsed_sd(blob: bytes | None, where: "str | list[str]") -> "acl.Descriptor | None":
    """A stored descriptor's blob parsed (see `sd_of`); None for none, or an unreadable one."""
    if not blob:
        return None
    try:
        return acl.parse(blob)
    except acl.BadDescriptor:
        log.warning("%s: unreadable stored security descriptor ignored",
                    where if isinstance(where, str) else "/".join(where))
        return None


def new_file_mode(share, readonly: bool, parent_mode: int | None = None) -> int:
    """A new file's mode bits: Samba's `create mask` and `force create mode` over rw-rw-rw-
    (r--r--r-- with the READONLY attribute); set with fchmod, whatever the umask. With
    `inherit permissions` (`parent_mode`: its directory's, `inherited_mode`) the
    directory's read and write bits instead, as Samba's unix_mode."""
    if parent_mode is not None:
        return parent_mode & (0o444 if readonly else 0o666)
    return (0o444 if readonly else 0o666) & share.create_mask | share.force_create_mode


def new_directory_mode(share, parent_mode: int | None = None) -> int:
    """A new directory's: `directory mask` and `force directory mode` over rwxrwxrwx; with
    `inherit permissions`, its directory's mode but setuid (setgid and sticky bits too),
    writable by its owner, as Samba's unix_mode."""
    if parent_mode is not None:
        return parent_mode & 0o3777 | 0o200
    return 0o777 & share.directory_mask | share.force_directory_mode


def inherited_mode(fs: FileSystem, share, parts: list[str]) -> int | None:
    """The mode of the directory a new name goes in, where the share's new files take theirs
    from it (`inherit permissions`); None otherwise."""
    if not share.inherit_permissions:
        return None
    return fs.stat(parts[:-1]).st_mode


def check_veto(names, parts: list[str]) -> None:
    """A path through or to a vetoed name (`veto files`) does not exist, in any case."""
    i = names.vetoed_path(parts)
    if i is not None:
        raise SMBError(wire.STATUS_OBJECT_NAME_NOT_FOUND if i == len(parts) - 1
                       else wire.STATUS_OBJECT_PATH_NOT_FOUND)


def check_veto_opened(names, fs: FileSystem, fd: int) -> None:
    """`veto files` judged on the file the kernel opened too: a symbolic link in the share (a
    local user's: SMB clients make none) whose target is or passes through a vetoed name
    reaches nothing either. The path the client sent was checked already (`check_veto`)."""
    parts = fs.opened_parts(fd)
    if parts:
        check_veto(names, parts)


def parent_is_directory(fs: FileSystem, parts: list[str]) -> bool:
    """Whether the directory a new name would go in exists (and is a directory)."""
    try:
        return stat.S_ISDIR(fs.stat(parts[:-1]).st_mode)
    except (FileNotFoundError, NotADirectoryError):
        return False


# attributes a client may not ask a new file to have (MS-FSCC 2.6; DEVICE, VOLUME, ...)
INVALID_CREATE_ATTRIBUTES = 0xFFFF8048
TRUNCATING = (wire.FILE_SUPERSEDE, wire.FILE_OVERWRITE, wire.FILE_OVERWRITE_IF)
OPENING_ONLY = (wire.FILE_OPEN, wire.FILE_OVERWRITE)    # the dispositions that make nothing
NO_CONTEXTS: dict = {}      # (a CREATE without create contexts: read, never changed)
ATTR_SYSTEM = 0x4
ADD_FILE, ADD_SUBDIRECTORY = 0x2, 0x4       # a directory's FILE_WRITE_DATA, FILE_APPEND_DATA
# what the READONLY attribute of a file takes from MAXIMUM_ALLOWED (MS-FSA 2.1.5.1.2.1):
# writing, appending, adding a subdirectory, deleting a child
READ_ONLY_WITHHOLDS = wire.FILE_WRITE_DATA | wire.FILE_APPEND_DATA | ADD_SUBDIRECTORY | acl.FILE_DELETE_CHILD


# the sizes of the create contexts whose data is a fixed structure (MS-SMB2 2.2.13.2): MxAc's
# optional timestamp, QFid's nothing, TWrp's timestamp, AlSi's size; any other is
# STATUS_INVALID_PARAMETER, as Samba answers (smbd_smb2_create_send)
CONTEXT_SIZES = {b"MxAc": (0, 8), b"QFid": (0,), b"TWrp": (8,), b"AlSi": (8,)}


def check_context_sizes(contexts: dict[bytes, bytes]) -> None:
    """STATUS_INVALID_PARAMETER for a known context whose data has the wrong size, and for an
    ExtA context with no EA in it (Samba's read_nttrans_ea_list finds none)."""
    for tag, sizes in CONTEXT_SIZES.items():
        data = contexts.get(tag)
        if data is not None and len(data) not in sizes:
            raise SMBError(wire.STATUS_INVALID_PARAMETER)
    if b"ExtA" in contexts and len(contexts[b"ExtA"]) < 8:
        raise SMBError(wire.STATUS_INVALID_PARAMETER)


def check_read_only(st, dos, access: int, options: int, disposition: int, attrs: int) -> None:
    """What the attributes of an existing file refuse, before any descriptor is looked at
    (MS-FSA 2.1.5.1.2, 2.1.5.1.2.1), whoever the server acts as (root included): writing or
    overwriting a READONLY file, deleting a READONLY file or directory on close, and
    overwriting a HIDDEN or SYSTEM file without asking for the attribute again."""
    read_only = is_read_only(st, dos)
    is_dir = stat.S_ISDIR(st.st_mode)
    if read_only and options & wire.FILE_DELETE_ON_CLOSE:
        raise SMBError(wire.STATUS_CANNOT_DELETE)
    if is_dir:
        return
    if read_only and (acl.map_generic(access) & (wire.FILE_WRITE_DATA | wire.FILE_APPEND_DATA)
                      or disposition in TRUNCATING):
        raise SMBError(wire.STATUS_ACCESS_DENIED)
    kept = (dos.attrs if dos is not None else 0) & (wire.ATTR_HIDDEN | ATTR_SYSTEM)
    if disposition in TRUNCATING and kept & ~attrs:
        raise SMBError(wire.STATUS_ACCESS_DENIED)


RESERVED_ACCESS = 0x0CE0FE00       # reserved access bits (MS-SMB2 3.3.5.9)
RESERVED_OPTIONS = 0xFF000000
UNSUPPORTED_OPTIONS = 0x00102080    # CREATE_TREE_CONNECTION, OPEN_BY_FILE_ID, RESERVE_OPFILTER
REFUSED_ACCESS = RESERVED_ACCESS | acl.ACCESS_SYSTEM_SECURITY    # (a privilege nobody here has)
REFUSED_OPTIONS = RESERVED_OPTIONS | UNSUPPORTED_OPTIONS


def refuse_fields(impersonation: int, access: int, options: int, attrs: int, disposition: int) -> None:
    """The error for a CREATE whose fields refuse it (REFUSED_ACCESS, REFUSED_OPTIONS, an
    invalid attribute or disposition, a level of impersonation that is none), in the order
    they are judged."""
    if impersonation > 3:   # Anonymous, Identification, Impersonation, Delegate
        raise SMBError(wire.STATUS_BAD_IMPERSONATION_LEVEL)
    if access & RESERVED_ACCESS:
        raise SMBError(wire.STATUS_ACCESS_DENIED)
    if access & acl.ACCESS_SYSTEM_SECURITY:
        raise SMBError(wire.STATUS_PRIVILEGE_NOT_HELD)
    if options & RESERVED_OPTIONS or attrs & INVALID_CREATE_ATTRIBUTES or disposition > wire.FILE_OVERWRITE_IF:
        raise SMBError(wire.STATUS_INVALID_PARAMETER)
    raise SMBError(wire.STATUS_NOT_SUPPORTED)   # (UNSUPPORTED_OPTIONS: all that is left)


def h_create(c: Connection, hdr: Header, msg: bytes, rhdr: Header, chain, retry: bool = False,
             held_since: float | None = None):
    """CREATE; `retry`: again, after the oplock break it waited for was answered (`held_since`:
    when it was first held, by the oplocks' clock). A durable reconnect or a replay is
    answered by `create_durable` before anything is opened."""
    tree = chain.tree or c.tree(hdr)      # (Chain.tree: found by the checks already)
    # (opens_here counts opens of the client's table only: below the limit there, it is
    # below the limit here, without the count's loop over the sessions)
    limit = c.limits.max_open_files
    if len(c.client.opens) >= limit and c.opens_here() >= limit or c.state.opens_full() or \
            c.state.user_opens(c.sessions[hdr.session_id].owner) >= c.limits.max_open_files_per_user:
        raise SMBError(wire.STATUS_TOO_MANY_OPENED_FILES)
    answered, durable = create_durable.before_create(c, hdr, msg, tree, msg[67], retry)
    if answered is not None:
        return answered
    try:
        return open_file(c, hdr, msg, rhdr, chain, retry, durable, tree, held_since)
    except GoAsync:
        raise           # held for an oplock break: its CreateGuid stays taken meanwhile
    except BaseException:
        durable.failed(c)
        raise


# the options a CREATE's name is judged by before anything is read of the file (with
# FILE_CREATE's disposition): what `check_kind_and_delete` looks at
KIND_OR_DELETE_OPTIONS = wire.FILE_DIRECTORY_FILE | wire.FILE_NON_DIRECTORY_FILE | wire.FILE_DELETE_ON_CLOSE


def check_kind_and_delete(exists: bool, is_dir: bool, disposition: int, options: int, access: int, attrs: int,
                          parts: list) -> None:
    """What a CREATE asks of the name's kind (a directory or not, none yet) and of a delete
    on close, refused in MS-FSA's order before the file is opened."""
    if exists and disposition == wire.FILE_CREATE:
        # whatever the name is (a directory made over a file too): the name is taken (MS-FSA
        # 2.1.5.1.2, before the file's type is looked at)
        raise SMBError(wire.STATUS_OBJECT_NAME_COLLISION)
    if exists and options & wire.FILE_DIRECTORY_FILE and not is_dir:
        raise SMBError(wire.STATUS_NOT_A_DIRECTORY)
    if exists and options & wire.FILE_NON_DIRECTORY_FILE and is_dir:
        raise SMBError(wire.STATUS_FILE_IS_A_DIRECTORY)
    if options & wire.FILE_DELETE_ON_CLOSE and (not _may_delete(access) or not parts):
        raise SMBError(wire.STATUS_ACCESS_DENIED)      # (the share's root is never deleted)
    if options & wire.FILE_DELETE_ON_CLOSE and attrs & wire.ATTR_READONLY and not exists:
        raise SMBError(wire.STATUS_CANNOT_DELETE)       # a read-only file cannot be deleted


def open_file(c: Connection, hdr: Header, msg: bytes, rhdr: Header, chain, retry: bool,
              durable: create_durable.DurableRequest, tree, held_since: float | None = None,
              attempt: int = 0):
    """CREATE of a file, directory or named pipe, on the request's tree (`c.tree(hdr)`, looked
    up by h_create, which checks the open files limit too). An existing file is looked up
    more than once (its stat, the open that reads its descriptor, the open the client gets):
    the three must be one file, else everything is judged again (`attempt`: how many times it
    was), so that the file opened is always the one whose descriptor, attributes and share
    modes were checked."""
    (_size, _secflags, requested_oplock, _imp, _cf, _res, access, attrs, share_access, disposition,
     options, name_off, name_len, ctx_off, ctx_len) = CREATE_REQUEST.unpack_from(msg, 64)
    if _imp > 3 or access & REFUSED_ACCESS or options & REFUSED_OPTIONS or \
            attrs & INVALID_CREATE_ATTRIBUTES or disposition > wire.FILE_OVERWRITE_IF:
        refuse_fields(_imp, access, options, attrs, disposition)    # (the usual request: one test)
    # (wire.from_utf16 without the codec registry's Python wrapper: one call, as strict)
    name = utf_16_le_decode(in_request(msg, name_off, name_len), "strict", True)[0] if name_len else ""
    if tree.fs is None:         # IPC$: named pipes
        return pipe.open_pipe(c, hdr, name)
    dfs_root = tree.share.msdfs_root and c.policy.host_msdfs
    if dfs_root and hdr.flags & wire.FLAGS_DFS:
        name = dfs.local_name(name, tree.name)      # "server\share\path" (smb.dfs)
    if name.startswith("\\"):
        raise SMBError(wire.STATUS_INVALID_PARAMETER)   # paths are relative to the share
    if options & wire.FILE_DIRECTORY_FILE and (options & wire.FILE_NON_DIRECTORY_FILE or disposition in TRUNCATING):
        # a directory is never truncated, and an open is one or the other (MS-FSA 2.1.5.1;
        # Samba and Windows refuse both so)
        raise SMBError(wire.STATUS_INVALID_PARAMETER)
    rules = tree.names
    if rules.folds_paths:
        name = rules.in_default_case(name)      # (the stream's name too, as Samba's)
    if ":" in name:
        spelled_name = name
        name, stream = split_stream(name)
        # "name::$DATA": the file's data stream, which a directory has not
        names_data_stream = stream is None and name != spelled_name
    else:
        stream, names_data_stream = None, False
    parts = split_path(name)
    check_veto(tree.names, parts)
    if dfs_root:
        dfs.check_not_covered(tree.fs, parts)       # a DFS link on the way: the client asks where
    # (they lie inside the request: create_durable.before_create checked it first)
    if ctx_len:
        contexts = parse_create_contexts(msg, ctx_off, ctx_len)
        check_context_sizes(contexts)
        if b"ExtA" in contexts and not tree.share.ea_support:
            raise SMBError(wire.STATUS_EAS_NOT_SUPPORTED)   # (`ea support = no`, as smbd)
        eas = parse_eas(contexts[b"ExtA"]) if b"ExtA" in contexts else []
        if b"TWrp" in contexts:     # a previous version: the file as a snapshot holds it
            tree = snapshot_tree(c, tree, contexts[b"TWrp"])
            if disposition in (wire.FILE_OPEN, wire.FILE_OPEN_IF) and not options & wire.FILE_DELETE_ON_CLOSE:
                # opened for writing too, as Windows (and Samba's shadow_copy2) opens it: the
                # open holds none of the rights to change it, and each change through it is
                # refused as write-protected (errors.write_refused)
                access = acl.map_generic(access) & ~wire.WRITE_CLASS
        # Apple's server query (refused before anything is opened where malformed)
        apple = aapl.answer(contexts[aapl.CONTEXT_NAME], c.policy.fruit_copyfile, rules.case_sensitive,
                            c.policy.fruit_model, c.policy.fruit_nfs_aces, tree.share.time_machine) \
            if aapl.CONTEXT_NAME in contexts and tree.share.fruit and c.policy.fruit_aapl else None
    else:
        contexts, eas, apple = NO_CONTEXTS, [], None
    lease_req = leasing.requested(contexts, requested_oplock, c.dialect, c.policy.smb2_leases) \
        if ctx_len else None    # (a lease is asked for in a context)
    fs = tree.fs
    if tree.share.read_only and (acl.map_generic(access) & wire.WRITE_CLASS or
                                 options & wire.FILE_DELETE_ON_CLOSE or
                                 disposition in (wire.FILE_SUPERSEDE, wire.FILE_CREATE,
                                                 wire.FILE_OVERWRITE, wire.FILE_OVERWRITE_IF)):
        raise SMBError(wire.STATUS_ACCESS_DENIED)   # a read-only share grants no write right
    may_make = stream is None and disposition not in OPENING_ONLY
    directory = None        # a new name's parent_metadata, read with its case lookup
    try:
        st = fs.stat(parts)
        exists = True
    except (FileNotFoundError, NotADirectoryError):
        st, exists = None, False
        # names are case-insensitive in SMB (but on a `case sensitive` share); a new name
        # may take the default case (`preserve case`)
        spelled, directory = spelled_in_directory(fs, parts, may_make, rules.short_names, c.state.tunnel,
                                                  tree.token.owner) \
            if not rules.case_sensitive else (parts, None)
        if spelled == parts and may_make and parts:
            spelled = parts[:-1] + [rules.new_name(parts[-1])]     # (in the same directory)
        if spelled != parts:
            parts = spelled
            try:
                st = fs.stat(parts)
                exists = True
            except (FileNotFoundError, NotADirectoryError):
                pass
            check_veto(tree.names, parts)      # as spelled on disk too
    parent_sd = None        # a new file's directory's stored descriptor (not a stream's)
    # the directory has a default ACL: the kernel makes a new file's mode from it and the
    # mode asked for (no umask), and none is set over it (as Samba's directory_has_default_acl)
    acl_decides_mode = False
    if not exists and may_make:
        # (read where a file may be made)
        parent_is_dir, parent_sd, acl_decides_mode = directory or parent_metadata(fs, parts)
    else:
        parent_is_dir = exists or len(parts) <= 1 or parent_is_directory(fs, parts)
    if not exists and len(parts) > 1 and not parent_is_dir:
        # a missing (or non-directory) parent is a path not found, whatever the disposition
        raise SMBError(wire.STATUS_OBJECT_PATH_NOT_FOUND)
    base_parts, base_key, index_number = parts, None, 0
    stream_limit = None     # a stream's: the most its file lets this user's open of it have
    stream_owner = None     # a stream's: its file's owner (uid, gid), who owns a new one
    made_file = False       # a stream's: its file made by this CREATE
    parent_mode = None      # a new name's directory's mode, where new files take theirs from it
    if stream is not None:      # a named stream of the file: a plain file in the stream depot
        if exists and stream.casefold() in APPLE_STREAMS:
            # (its "._" file's Finder information and resource fork, first: Samba's ad_convert)
            take_appledouble(c, tree, parts, st)
        if options & wire.FILE_DIRECTORY_FILE:
            raise SMBError(wire.STATUS_NOT_A_DIRECTORY)     # a stream is never one (as Windows)
        if not exists:
            if disposition in OPENING_ONLY:
                raise SMBError(wire.STATUS_OBJECT_NAME_NOT_FOUND)
            if tree.share.read_only:
                raise SMBError(wire.STATUS_ACCESS_DENIED)
            # what the request alone refuses, refused before a file is made for it
            if options & wire.FILE_DELETE_ON_CLOSE and not _may_delete(access):
                raise SMBError(wire.STATUS_ACCESS_DENIED)
            if options & wire.FILE_DELETE_ON_CLOSE and attrs & wire.ATTR_READONLY:
                raise SMBError(wire.STATUS_CANNOT_DELETE)
            create_file_of_stream(fs, tree.share, parts, attrs, contexts, eas, tree.token)   # the file too
            made_file = True
            st, exists = fs.stat(parts), True
            c.state.watches.post("/".join([fs.root] + parts), notify.ADDED, notify.FILE_NAME)
        opening = disposition in OPENING_ONLY
        index_number = st.st_ino        # a stream is known by its file's id (as on NTFS)
        base_key, stream_limit, base_st, base_dos = stream_of_file(
            fs, tree.share, parts, stat.S_ISDIR(st.st_mode), access, options, disposition, attrs, not opening,
            tree.token, made=made_file)
        stream_owner = base_st.st_uid, base_st.st_gid     # (of the file whose id was read)
        if c.state.is_delete_pending((base_st.st_dev, base_st.st_ino)):
            raise SMBError(wire.STATUS_DELETE_PENDING)      # its file goes when its opens close
        if base_key is None:
            raise SMBError(wire.STATUS_OBJECT_NAME_NOT_FOUND if opening else wire.STATUS_ACCESS_DENIED)
        parts = fs.stream_parts(base_key, stream)
        names = fs.stream_names(base_key)       # (their names only: no stat each)
        folded = stream.casefold()
        spelled = next((n for n in names if n.casefold() == folded), None) \
            if not rules.case_sensitive else None
        if spelled is not None:      # stream names are case-insensitive too (as file names are)
            stream, parts = spelled, fs.stream_parts(base_key, spelled)
        try:
            st, exists = fs.stat(parts), True
            if (st.st_uid, st.st_gid) != stream_owner and stream_limit & wire.FILE_WRITE_DATA \
                    and stat.S_ISREG(st.st_mode) and st.st_nlink == 1:
                # the server's (an older version's), or its file's former owner's: the
                # file's owner's before anything more is written to it
                fs.own_stream(base_key, stream, stream_owner)
        except FileNotFoundError:
            if opening:
                raise SMBError(wire.STATUS_OBJECT_NAME_NOT_FOUND)
            if not stream_limit & wire.FILE_WRITE_DATA:
                raise SMBError(wire.STATUS_ACCESS_DENIED)     # a new stream writes its file
            if len(names) >= MAX_STREAMS:
                raise SMBError(wire.STATUS_INSUFFICIENT_RESOURCES)
            st, exists = None, False
            fs.make_stream_dir(base_key)
        if exists and disposition == wire.FILE_OPEN and (
                tree.aapl is not None and not st.st_size or
                tree.share.fruit and aapl.shown_afp_info(stream, st.st_size)):
            # macOS takes an empty stream for none (Samba's vfs_fruit answers so once AAPL
            # is negotiated), and Finder information that is not one whole AfpInfo (one
            # another share wrote) for none on a fruit share (vfs_fruit removes it)
            raise SMBError(wire.STATUS_OBJECT_NAME_NOT_FOUND)
    is_dir = exists and stat.S_ISDIR(st.st_mode)
    if is_dir and names_data_stream:     # (as Windows and smbd)
        raise SMBError(wire.STATUS_NOT_A_DIRECTORY if options & wire.FILE_DIRECTORY_FILE
                       else wire.STATUS_FILE_IS_A_DIRECTORY)
    if lease_req is not None and not oplock_break.may_join_lease(c, lease_req.key, hdr.session_id):
        lease_req = None        # another user's lease under this ClientGuid: none of it
    if lease_req is not None and c.state.oplocks.lease_key_elsewhere(
            c.client_guid, lease_req.key, (st.st_dev, st.st_ino) if exists else None):
        raise SMBError(wire.STATUS_INVALID_PARAMETER)  # a lease key names one file (3.3.5.9.8)
    if exists and not (is_dir or stat.S_ISREG(st.st_mode)):
        raise SMBError(wire.STATUS_IO_REPARSE_TAG_NOT_HANDLED)  # a FIFO, socket or device: as Samba
    if options & KIND_OR_DELETE_OPTIONS or disposition == wire.FILE_CREATE:    # (the usual CREATE: one test)
        check_kind_and_delete(exists, is_dir, disposition, options, access, attrs, parts)
    sd = dos = None
    # an existing file is opened once to read its stored descriptor and DOS information;
    # where the open it asks for would be that same read-only open (nothing to write, nothing
    # to truncate, no MAXIMUM_ALLOWED that might grant writing), that fd becomes the open's
    held_fd = held_st = None
    created_fd = None       # a new file's creating descriptor, kept where it is the open's
    if exists:
        # (the share's root too, always a directory: a descriptor a client stored on it
        # decides as well, and its one open is the open's, as any directory's is)
        keep = is_dir or not (acl.map_generic(access) & (wire.FILE_WRITE_DATA | wire.FILE_APPEND_DATA)
                              or access & wire.MAXIMUM_ALLOWED or disposition in TRUNCATING)
        (held_fd, held_st), sd, dos = opened_for_metadata(fs, parts, is_dir, keep,
                                                          root_st=st if not parts else None)
        if held_st is not None and moved(st, held_st):
            if held_fd is not None:
                fs.close_file(held_fd)
            return open_again(c, hdr, msg, rhdr, chain, retry, durable, tree, held_since, attempt)
        if stream is not None:
            # a stream has no security descriptor of its own: its file's decided above
            # (stream_limit); one an older version stored on the stream is ignored
            sd = None
    try:
        truncating = exists and not is_dir and disposition in TRUNCATING
        # overwriting a file needs the right to write it, whatever the open asks for (the open
        # itself holds only what it asked for)
        checked_access = access | (wire.FILE_WRITE_DATA if truncating else 0)
        token = tree.token     # (c.token(hdr): the SIDs of this tree connect)
        # the file's Unix owner holds the owner's rights (WRITE_DAC and WRITE_OWNER without a
        # stored descriptor: acl.owns); None for a file this CREATE makes, and for a stream,
        # whose file's rights are stream_limit
        file_owner = acl.unix_user(st.st_uid) if exists and stream is None else None
        parent = None
        checked = None      # acl.check's answer for checked_access, where asked
        if exists and parts:
            if stream is None:      # (a stream's attributes are its file's: see stream_of_file)
                check_read_only(st, dos, access, options, disposition, attrs)
            # access is checked before anything is started for this open on other clients'
            # behalf (breaks, closing detached durable opens), as Windows does
            if sd is not None:      # a stored security descriptor decides who opens the file
                parent = parent_descriptor(fs, parts)
            checked = acl.check(checked_access, sd, parent, token, file_owner)
            if checked < 0:         # (without a descriptor: WRITE_DAC, WRITE_OWNER are the owner's)
                raise SMBError(wire.STATUS_ACCESS_DENIED)
            if sd is None and not is_dir and held_fd is None:
                # else the kernel, which the open itself asks only later; a held fd is a
                # read-only open of the file this account just made (kept only for an open
                # that asks to read at most): the kernel has answered that already
                refused_by_the_kernel(fs, parts, checked_access)
        elif exists:     # the root (its parent is outside the share)
            checked = acl.check(checked_access, sd, None, token, file_owner)
            if checked < 0:
                raise SMBError(wire.STATUS_ACCESS_DENIED)
        if exists:
            key = (st.st_dev, st.st_ino)
            if c.state.is_delete_pending(key):
                raise SMBError(wire.STATUS_DELETE_PENDING)
            # truncating the file writes it, whatever the access asked for (Samba's
            # open_access_mask): so it counts for share modes and oplocks; oplock breaks
            # first: a holder may close the handle it keeps (batch)
            if create_durable.close_detached(c, key, checked_access):
                # a durable open whose client is gone held it: closed (deleted on close, perhaps)
                if held_fd is not None:
                    fs.close_file(held_fd)
                    held_fd = None
                return open_file(c, hdr, msg, rhdr, chain, retry, durable, tree, held_since, attempt)
            sharing_violation = not c.state.share_modes.allowed(key, checked_access, share_access)
            if c.state.oplocks.contend(key, checked_access, sharing_violation, first_attempt=not retry,
                                       overwrite=truncating,
                                       lease=(c.client_guid, lease_req.key) if lease_req else None):
                if held_too_long(c, held_since):
                    raise SMBError(wire.STATUS_SHARING_VIOLATION)
                raise held_for_break(c, hdr, msg, key, durable, held_since)
            if not sharing_violation and stream is None and not is_dir \
                    and sharemodes.categories(checked_access) & sharemodes.DELETE:
                sharing_violation = streams_refuse_delete(c, fs, parts, key)
            if not sharing_violation and stream is None and truncating:
                # overwriting a file deletes its named streams (below): never one still open
                sharing_violation = bool(open_streams(c, fs, parts, key))
            if sharing_violation:
                raise SMBError(wire.STATUS_SHARING_VIOLATION)  # before anything is truncated
        if not exists and disposition in OPENING_ONLY:
            raise SMBError(wire.STATUS_OBJECT_NAME_NOT_FOUND)
        if not exists and tree.share.read_only:
            raise SMBError(wire.STATUS_ACCESS_DENIED)      # FILE_OPEN_IF would create it
        action = wire.FILE_OPENED
        # what the open is granted: generic rights mapped, MAXIMUM_ALLOWED resolved; every later
        # request on the handle is checked against this, never against what was asked
        # (the check above answered it already where nothing was added for truncating)
        granted = checked if checked is not None and checked_access == access else \
            acl.check(access, sd, parent, token, file_owner)     # (its check passed above)
        if exists and not is_dir and stream is None and access & wire.MAXIMUM_ALLOWED and is_read_only(st, dos):
            # (a READONLY directory gives all, and MxAc stays what the DACL grants: as Windows)
            granted &= ~READ_ONLY_WITHHOLDS
        if tree.share.read_only:
            granted &= wire.READ_ONLY_ACCESS
        if stream_limit is not None:
            granted &= stream_limit
        if exists and parts and granted & wire.DELETE and not fs.may_delete(parts):
            # the account may not remove the file from its directory (no write access there, or a
            # sticky directory and someone else's file): refused to a client that asked for DELETE,
            # left out of what MAXIMUM_ALLOWED grants (as Samba's can_delete_file_in_directory)
            if not access & wire.MAXIMUM_ALLOWED or options & wire.FILE_DELETE_ON_CLOSE:
                raise SMBError(wire.STATUS_ACCESS_DENIED)
            granted &= ~wire.DELETE
        if options & wire.FILE_DELETE_ON_CLOSE and not granted & wire.DELETE:
            raise SMBError(wire.STATUS_ACCESS_DENIED)
        if eas and truncating and stream is None and not granted & wire.FILE_WRITE_EA:
            # an overwrite stores the ExtA context's EAs on the file: as SET_INFO would, with
            # FILE_WRITE_EA granted (Samba's set_ea), refused before anything is truncated
            raise SMBError(wire.STATUS_ACCESS_DENIED)
        new_sd = None
        if not exists:
            want_dir = bool(options & wire.FILE_DIRECTORY_FILE)
            if stream is not None:      # (a new file's directory's: read with its type)
                parent_sd = stored_sd(fs, parts[:-1])
            if parent_sd is not None and acl.check(ADD_SUBDIRECTORY if want_dir else ADD_FILE, parent_sd,
                                                   None, token) < 0:
                raise SMBError(wire.STATUS_ACCESS_DENIED)   # the directory's DACL forbids adding here
            new_sd = new_descriptor(contexts, parent_sd, want_dir, token, tree.share.force_unknown_acl_user,
                                    tree.share.nt_acl_support)
            if stream is not None:
                new_sd = None       # (none of its own: its file's holds, see file_of in info.py)
            parent_mode = inherited_mode(fs, tree.share, parts) if stream is None else None
            if want_dir:
                if acl_decides_mode:
                    fs.mkdir(parts, new_directory_mode(tree.share, parent_mode))
                else:
                    fs.mkdir(parts)
                is_dir = True
            else:
                if stream is None:
                    mode = new_file_mode(tree.share, bool(attrs & wire.ATTR_READONLY), parent_mode)
                    fd = fs.open(parts, os.O_CREAT | os.O_EXCL | os.O_RDWR, mode if acl_decides_mode else 0o600)
                else:       # (made by the server in its depot, owned by the file's owner; its
                    # attributes are its file's: the ones asked for went to a file made with it)
                    fd = fs.create_stream(base_key, stream, stream_owner)
                try:
                    if stream is None and not acl_decides_mode:
                        fs.fchmod(fd, mode)
                    # the open below would open this file again read-write, as this account:
                    # where the kernel would let it (asked as that open would be, after the
                    # mode just set), the creating descriptor is that open (no close, no
                    # second lookup, no window in which the name could change what it names).
                    # A file this CREATE made READONLY (no write bits, by the mode set here
                    # alone) is written through the handle that made it, as on Windows and
                    # smbd: the attribute speaks for later opens; a second open could only
                    # read, and the creator's writes failed (STATUS_INVALID_HANDLE)
                    made_read_only = attrs & wire.ATTR_READONLY and not acl_decides_mode
                    if stream is None and granted & (wire.FILE_WRITE_DATA | wire.FILE_APPEND_DATA) \
                            and (made_read_only or fs.may_open(parts, MAY_WRITE)):
                        created_fd = fd
                finally:
                    if created_fd is None:
                        fs.close_file(fd)
            action = wire.FILE_CREATED
        writable = bool(granted & (wire.FILE_WRITE_DATA | wire.FILE_APPEND_DATA)) or truncating
        opened = None       # the fd's stat and DOS information, where already read
        opened_st = None    # an existing file's stat, read through its second open
        if held_fd is not None and (is_dir or not writable):
            fd, held_fd = held_fd, None       # the very open a second one would make
            opened = held_st, dos
        elif is_dir:
            fd = fs.open(parts, os.O_RDONLY | os.O_DIRECTORY)
        elif created_fd is not None:
            fd, created_fd = created_fd, None
        else:
            try:
                fd = fs.open(parts, os.O_RDWR if writable else os.O_RDONLY)
            except PermissionError:
                # the user may not write the file: an existing one is then refused to a client that
                # asked to write it, and opened for reading with MAXIMUM_ALLOWED (as Samba does);
                # a file just made read-only (0444) by this CREATE keeps the rights asked for
                if not writable or truncating or action != wire.FILE_CREATED and not access & wire.MAXIMUM_ALLOWED:
                    raise
                if action != wire.FILE_CREATED:
                    granted &= ~(wire.FILE_WRITE_DATA | wire.FILE_APPEND_DATA)
                fd = fs.open(parts, os.O_RDONLY)
        if exists and opened is None:
            # a second open of the name: still the file judged above, before anything is
            # done to it (truncated); else all is judged again on the file there now
            opened_st = fs.fstat(fd)
            if moved(st, opened_st):
                fs.close_file(fd)
                return open_again(c, hdr, msg, rhdr, chain, retry, durable, tree, held_since, attempt)
    except FileNotFoundError:
        if not exists:
            raise
        # the name went since it was looked up (another worker's delete on close, another
        # program), before anything was done to it: judged again as the name that is not
        # there now (FILE_OPEN_IF makes it; FILE_OPEN is answered OBJECT_NAME_NOT_FOUND)
        return open_again(c, hdr, msg, rhdr, chain, retry, durable, tree, held_since, attempt)
    except FileExistsError:
        if exists or disposition == wire.FILE_CREATE:
            raise
        # made since it was looked up, by someone else (this CREATE's exclusive create made
        # nothing): judged again as the name that is there now
        return open_again(c, hdr, msg, rhdr, chain, retry, durable, tree, held_since, attempt)
    finally:
        if held_fd is not None:     # (not taken: refused, or opened to write)
            fs.close_file(held_fd)
        if created_fd is not None:  # (not taken: what followed its creation failed)
            fs.close_file(created_fd)
    # a file or directory this CREATE made: what it must hold (its descriptor, EAs, DOS
    # information) is stored before its open is registered; where any of it cannot be, it is
    # undone (mode 0, then removed) and the client gets the error (ENOSPC: STATUS_DISK_FULL)
    made = action == wire.FILE_CREATED and stream is None
    try:        # the descriptor is closed whatever fails before the open is registered
        if tree.names.veto and stream is None:
            check_veto_opened(tree.names, fs, fd)
        if truncating:
            fs.ftruncate(fd, 0)
            action = wire.FILE_OVERWRITTEN if disposition != wire.FILE_SUPERSEDE else wire.FILE_SUPERSEDED
            if stream is None:
                overwrite_attributes(fs, fd, attrs)
                # an overwritten file has no named stream left (Windows; Samba's clear_ads and
                # delete_all_streams)
                try:
                    fs.remove_streams(fs.stream_id_of(fd))
                except OSError:     # (a depot not the server's: its streams are not reached)
                    pass
        if action == wire.FILE_CREATED and is_dir and not acl_decides_mode:
            fs.fchmod(fd, new_directory_mode(tree.share, parent_mode))
        heir = unix_owner.directory_owner(fs, tree.share, parts) if made else None
        if new_sd is not None:
            unix_owner.give_named_owner_and_group(fs, fd, contexts, tree.share.force_unknown_acl_user)
            if heir is not None and tree.share.inherit_owner == unix_owner.WINDOWS_AND_UNIX:
                new_sd = dataclasses.replace(new_sd, owner=heir[1])     # its descriptor's owner too
            writable_for_metadata(fs, fd, lambda: fs.set_sd(fd, new_sd.pack()))
        if made:
            store_eas(fs, fd, eas)      # (an overwritten file's: once its open is registered)
            # the stat's times move with writes; the creation time must not: stored now (the
            # stat read again after, for the ChangeTime that storing moved)
            stored = store_new_file_dos(fs, fd, attrs, is_dir)
            if heir is not None:        # (last: what is stored above is stored as its creator)
                fs.give_new_file(fd, heir[0])
            opened = fs.fstat(fd), stored
        if opened is not None:
            st, dos = opened
        else:
            # (the stat read to check the file's identity is its stat still, unless it was truncated)
            st = opened_st if opened_st is not None and not truncating else fs.fstat(fd)
            dos = fs.get_dos(fd)
        o = make_open(fd=fd, parts=parts, is_dir=is_dir, access=access,
                      delete_on_close=bool(options & wire.FILE_DELETE_ON_CLOSE), key=(st.st_dev, st.st_ino),
                      tree=tree, session_id=hdr.session_id, tree_id=hdr.tree_id, granted=max(granted, 0),
                      stream=stream, base_parts=base_parts, base_key=base_key,
                      file_key=(base_st.st_dev, base_st.st_ino) if stream is not None else (),
                      index_number=index_number or st.st_ino,
                      write_through=bool(options & wire.FILE_WRITE_THROUGH))
        # share modes count what the open holds: MAXIMUM_ALLOWED as it was granted (MS-FSA
        # 2.1.5.1.2, Samba's resolved access_mask), not as every right, which would refuse
        # another user's opens beside a reader that shares everything
        held = checked_access if not access & wire.MAXIMUM_ALLOWED else \
            max(granted, 0) | (wire.FILE_WRITE_DATA if truncating else 0)
        registered = c.state.register_open(o, held, share_access)
    except BaseException:
        if made:    # never left with its mode bits alone speaking for it (as create_file_of_stream)
            unmake(fs, parts, fd, is_dir)
        fs.close_file(fd)
        raise
    if not registered:
        fs.close_file(fd)
        raise SMBError(wire.STATUS_SHARING_VIOLATION)
    client = c.client           # (c.next_id: a property of the client's counter)
    volatile = client.next_id
    client.next_id = volatile + 1
    fid = c.random_ids.take(8) + VOLATILE_ID.pack(volatile)
    o.fid = fid
    c.add_open(o)
    # (byte-range locks keep READ and HANDLE caching from a new oplock or lease: where none is
    # asked for, none are looked for)
    locked = bool(requested_oplock) and action != wire.FILE_OVERWRITTEN and not c.state.locks.idle(o.key)
    lease = None
    # (`veto oplock files`: as if the share had `oplocks = no`, for this file)
    oplocks = tree.share.oplocks and not (rules.veto_oplocks and base_parts
                                          and rules.oplocks_vetoed(base_parts[-1]))
    if lease_req is not None and oplocks and (not is_dir or may_lease_directory(c, lease_req)):
        if is_dir:      # a change made before the grant, its kernel event still queued, is not its to break
            c.state.watches.catch_up()
        lease = c.state.oplocks.grant_lease(
            o, c.client_guid, lease_req.key, lease_req.state, version=lease_req.version,
            epoch=lease_req.epoch, parent_key=lease_req.parent_key, locked=locked,
            send_lease_break=c.send_lease_break)
        oplock = LEVEL_LEASE
        if lease.directory:
            c.state.watch_leased_directory(o)
    else:
        oplock = c.state.oplocks.grant(
            o, requested_oplock, created=action == wire.FILE_CREATED,
            enabled=oplocks, level2=tree.share.level2_oplocks, locked=locked,
            send_break=c.send_oplock_break)
    if o.delete_on_close:       # the name goes at close: other leases keep no handle to it
        c.state.oplocks.break_handle_caching(o)
    if action == wire.FILE_CREATED:
        c.state.watches.post_open(o, notify.ADDED, notify.DIR_NAME if is_dir else notify.FILE_NAME)
    elif action != wire.FILE_OPENED:
        c.state.watches.post_open(o, notify.MODIFIED, notify.SIZE | notify.LAST_WRITE)
    if action != wire.FILE_OPENED:      # made, overwritten or superseded: its directory's listing changed
        dirleases.open_changed(c, o)
    try:        # registered: what fails now undoes the open as a CLOSE would (deleting nothing)
        if eas and not made and action != wire.FILE_OPENED and stream is None:
            # (an overwritten file's; a new file's are stored above, a stream's file's by
            # create_file_of_stream)
            store_eas(fs, fd, eas)
        if b"AlSi" in contexts and action != wire.FILE_OPENED and not is_dir:
            set_allocation(fs, fd, struct.unpack_from("<Q", contexts[b"AlSi"])[0],
                           tree.share.strict_allocate)
            st, dos = fs.fstat(fd), fs.get_dos(fd)
    except BaseException:
        o.delete_on_close = False
        c.close_open(o)
        raise
    answers = []
    if b"MxAc" in contexts:    # the most this user may be granted here
        answers.append((b"MxAc", struct.pack("<II", 0, max(most_allowed(
            fs, parts, tree.share, token, (sd, parent, file_owner, stream_limit),
            (new_sd, parent_sd if stream is None else stored_sd(fs, parts[:-1]))
            if new_sd is not None and action == wire.FILE_CREATED else None), 0))))
    if b"QFid" in contexts:    # an on-disk id: inode and device, then the volume
        answers.append((b"QFid", struct.pack("<QQ", tree.file_id(o.index_number), st.st_dev) + ROOT_UUID))
    if lease is not None:
        answers.append((leasing.CONTEXT_NAME, leasing.response(lease)))
    answers += create_durable.granted(c, hdr, o, durable, action)
    if apple is not None:
        reply, offered = apple
        answers.append((aapl.CONTEXT_NAME, reply))
        tree.aapl = offered if tree.aapl is None else tree.aapl.joined(offered)
    if stream is None:
        return response_body(o, oplock, action, answers, st, dos, c.state.write_times.shown(o.key)), fid
    # (a stream's times and attributes: its file's, as read when its rights were judged)
    file_write_ns = c.state.write_times.shown((base_st.st_dev, base_st.st_ino))
    return response_body(o, oplock, action, answers, st, dos, file_write_ns, file=(base_st, base_dos)), fid


def may_lease_directory(c: Connection, lease_req: leasing.LeaseRequest) -> bool:
    """Whether an open of a directory may hold the lease it asks for: a version 2 lease
    context (SMB 3) on a connection that negotiated directory leasing
    (`negotiate.offers_directory_leasing`). SMB 2.1 has none (MS-SMB2 3.3.5.9.8), nor has a
    version 1 context."""
    return lease_req.version == 2 and c.dialect >= wire.SMB300 and negotiate.offers_directory_leasing(c)


def open_again(c: Connection, hdr: Header, msg: bytes, rhdr: Header, chain, retry: bool,
               durable: create_durable.DurableRequest, tree, held_since: float | None, attempt: int):
    """open_file once more, its name having been given to another file meanwhile (`moved`); a
    name that keeps changing is STATUS_SHARING_VIOLATION, which clients retry."""
    if attempt >= MOVED_RETRIES:
        raise SMBError(wire.STATUS_SHARING_VIOLATION)
    return open_file(c, hdr, msg, rhdr, chain, retry, durable, tree, held_since, attempt + 1)


def most_allowed(fs: FileSystem, parts: list[str], share, token, judged: tuple, made: tuple | None) -> int:
    """What MxAc reports: the most this user may be granted on the file, as its open was judged
    (`judged`: its descriptor, its directory's, its Unix owner and a stream's limit), within a
    read-only share and the stream's limit; for a file made with a descriptor (`made`: that
    descriptor and its directory's stored one, if any), what the new descriptor grants.
    Asked only where a client asks for it."""
    if made is not None:
        new_sd, parent_sd = made
        parent = parent_sd or acl.from_mode(fs.stat(parts[:-1]))
        return acl.check(acl.MAXIMUM_ALLOWED, new_sd, parent, token)
    sd, parent, file_owner, stream_limit = judged
    most = acl.check(acl.MAXIMUM_ALLOWED, sd, parent, token, file_owner)
    if share.read_only:
        most &= wire.READ_ONLY_ACCESS
    if stream_limit is not None:
        most &= stream_limit
    return most


def response_body(o: Open, oplock: int, action: int, answers: list, st=None, dos=None,
                  write_ns: int | None = None, file=None) -> bytes:
    """The CREATE response for the open (its file's stat and DOS information, read again
    unless given; `write_ns`: the write time shown in place of the kernel's) with these
    create contexts. A stream's open shows its file's times and attributes (MS-FSA keeps
    them per file), its own sizes: `file` is the file's stat and DOS information, read
    through `file_metadata` unless given."""
    if st is None:
        st, dos = o.tree.fs.fstat(o.fd), o.tree.fs.get_dos(o.fd)
    # (file_metadata's answer for a file or directory, without its call)
    file_st, file_dos = file or ((st, dos) if o.stream is None else file_metadata(o, st, dos))
    extra = encode_create_contexts(answers) if answers else b""
    return CREATE_HEAD.pack(89, oplock, 0, action) + \
        network_open_info(file_st, file_dos, write_ns, shown_hidden(o), st, dos, o.is_dir) + \
        CREATE_TAIL.pack(0, o.fid, 152 if extra else 0, len(extra)) + extra


def file_metadata(o: Open, st, dos) -> tuple:
    """The stat and DOS information that give the open its times and attributes: `st` and
    `dos`, the open's own, for a file or directory; a stream's file's, read through the file
    (`info.file_of`), or the stream's own where its file is no longer reached by its name."""
    if o.stream is None:
        return st, dos
    try:
        with file_of(o) as fd:
            return o.tree.fs.fstat(fd), o.tree.fs.get_dos(fd)
    except (SMBError, OSError):
        return st, dos


# the CREATE request's fixed part (MS-SMB2 2.2.13), from StructureSize to CreateContextsLength
CREATE_REQUEST = struct.Struct("<HBBIQQIIIIIHHII")
VOLATILE_ID = struct.Struct("<Q")      # a FileId's second half: the connection's counter
# the CREATE response's fixed part (MS-SMB2 2.2.14): StructureSize, OplockLevel, Flags,
# CreateAction (CREATE_HEAD), the four times, AllocationSize, EndofFile, FileAttributes
# (fileinfo.network_open_info), Reserved2, FileId, CreateContextsOffset and Length (CREATE_TAIL; the
# contexts follow it, at 64 + 88)
CREATE_HEAD, CREATE_TAIL = struct.Struct("<HBBI"), struct.Struct("<I16sII")
# the CLOSE response (2.2.16): StructureSize, Flags, Reserved (CLOSE_HEAD), the four times,
# AllocationSize, EndofFile, FileAttributes (fileinfo.network_open_info); without
# CLOSE_FLAG_POSTQUERY_ATTRIB all but its size are zero
CLOSE_HEAD = struct.Struct("<HHI")
CLOSE_RESPONSE_EMPTY = CLOSE_HEAD.pack(60, 0, 0) + bytes(NETWORK_OPEN_INFO.size)


def held_too_long(c: Connection, since: float | None) -> bool:
    """Whether a CREATE first held at `since` (None: not held yet) has waited for breaks twice
    the break timeout: it waits no more, and is answered STATUS_SHARING_VIOLATION (Samba's
    schedule_defer_open). Each break is answered or timed out in time, but holders that
    answer each one and take their caching back before the CREATE is tried again (two
    leases in turn, or one through another worker) would otherwise hold it for ever."""
    oplocks = c.state.oplocks
    return since is not None and oplocks.clock() - since >= 2 * oplocks.timeout


def held_for_break(c: Connection, hdr: Header, msg, key,
                   durable: create_durable.DurableRequest | None = None,
                   since: float | None = None) -> GoAsync:
    """A CREATE that waits for an oplock's holder (MS-SMB2 3.3.5.9: answered STATUS_PENDING
    first): tried again when the break is answered, the holder closes or its time is up
    (`since`: when it was first held, for `held_too_long`; None: now).
    One a replay may name (its CreateGuid reserved in the replay cache: `durable.pending`)
    outlives the loss of its connection where its session has another channel (it then
    runs there); its reservation ends with it."""
    named = durable is not None and durable.key is not None
    pending = durable.pending if durable is not None else None

    def wait(areq, again: Callable[[], None]) -> None:
        def retry() -> None:
            again()
            if named:
                c.state.durable.created(durable.key)    # (forgets a reservation that ended)

        def stop() -> None:
            c.state.oplocks.unwait(key, retry)
            if named:
                durable.failed(c)       # cancelled, or its connection lost for good

        areq.on_cancel = stop
        if pending is not None:
            pending.request = areq
            areq.replayable = True
        c.state.oplocks.wait(key, retry)

    return held_create(c, msg, wait, since)


def held_create(c: Connection, msg, wait: Callable[[AsyncRequest, Callable[[], None]], None],
                since: float | None = None) -> GoAsync:
    """A CREATE answered STATUS_PENDING first, handled again (as a retry) each time the
    function `wait(areq, again)` arranged calls `again` (a break answered, an open detached:
    `held_for_break`, `create_durable.held_for_detach`), on the connection that holds it then
    (its session's other channel, where the first is gone). `since`: when it was first held
    (None: now), which each retry is told."""
    request = bytes(msg)        # (the frame's buffer is reused meanwhile)
    first = c.state.oplocks.clock() if since is None else since

    def start(areq: AsyncRequest) -> None:
        def again() -> None:
            conn = c.client.connection_of(areq) or c
            conn.resume(areq, lambda rhdr: h_create(conn, areq.hdr, request, rhdr, Chain(),
                                                    retry=True, held_since=first))
        wait(areq, again)

    return GoAsync(start)


def overwrite_attributes(fs: FileSystem, fd: int, attrs: int) -> None:
    """An overwritten file takes the attributes the CREATE asks for, with ARCHIVE (MS-FSA
    2.1.5.1.2), READONLY as its write bits; the DOS information goes first, while the file
    can still be written."""
    dos = fs.get_dos(fd) or DosInfo()
    dos.attrs = (attrs & STORED_ATTRIBUTES) | wire.ATTR_ARCHIVE | (dos.attrs & ATTR_SPARSE_FILE)
    writable_for_metadata(fs, fd, lambda: fs.set_dos(fd, dos))
    if attrs & wire.ATTR_READONLY:
        fs.fchmod(fd, fs.fstat(fd).st_mode & 0o7777 & ~0o222)


def shown_hidden(o: Open) -> bool:
    """Whether the open's file shows the hidden attribute by the share's rules (`hide files`,
    `hide dot files`)."""
    base = o.base_parts if o.base_parts is not None else o.parts
    return bool(base) and o.tree.names.hidden(base[-1])


def h_close(c: Connection, hdr: Header, msg: bytes, rhdr: Header, chain):
    if (chain.tree or c.tree(hdr)).fs is None:
        return pipe.h_close(c, hdr, msg, rhdr, chain)
    _size, flags, _r = struct.unpack_from("<HHI", msg, 64)
    fid = bytes(msg[72:88])
    o = c.open_for(fid, chain, hdr)
    under_way = c.io_under_way
    if under_way is not None and under_way(o.fd):   # answered once it has ended (Connection.after_io)
        o.closing = True
        return FileSteps(c.after_io((o.fd,), lambda: closed_if_open(c, o, flags))), o.fid
    return closed(c, o, flags), o.fid


def closed_if_open(c: Connection, o: Open, flags: int):
    """`closed`, after a wait for the open's I/O: unless it was closed meanwhile (its
    connection lost)."""
    if c.client.opens.get(o.fid) is not o:
        raise SMBError(wire.STATUS_FILE_CLOSED)
    return closed(c, o, flags)


def closed(c: Connection, o: Open, flags: int):
    """Closes the open; the CLOSE response's body."""
    show_on_close(c.state.write_times, o)      # (before the times are read for the answer)
    st = o.tree.fs.fstat(o.fd) if flags & wire.CLOSE_FLAG_POSTQUERY_ATTRIB else None
    dos = o.tree.fs.get_dos(o.fd) if st else None
    file_st, file_dos = file_metadata(o, st, dos) if st else (None, None)    # (a stream's: its file's)
    c.close_open(o, shown=True)
    if st:
        # other handles' writes still to show
        write_ns = c.state.write_times.shown(o.key if o.stream is None else (file_st.st_dev, file_st.st_ino))
        body = CLOSE_HEAD.pack(60, flags, 0) + network_open_info(file_st, file_dos, write_ns, shown_hidden(o),
                                                                 st, dos, o.is_dir)
    else:
        body = CLOSE_RESPONSE_EMPTY
    return body
