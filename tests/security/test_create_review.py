"""CREATE tried adversarially: malformed create-context chains and contexts, option and
disposition combinations, a SecD context carrying a SACL, an overwrite that stores EAs,
and a name that another process points at another file while the CREATE checks it. Two
Unix accounts (ALICE, BOB) made for the module and a server started as root acting as them
(raw requests, raw.py). Where Samba has an answer, the test expects it (each was compared
with a real smbd)."""
from __future__ import annotations

import ctypes
import os
import pwd
import shutil
import struct
import threading
import time

import pytest
from raw import UserTree
from servers import project_share_server, unix_accounts
from smbcore import create_body, create_contexts_of, full_ea_list

from smbring.smb import acl, wire

if os.geteuid() != 0 or not shutil.which("useradd"):
    pytest.skip("acting as Unix accounts needs root (and useradd)", allow_module_level=True)

PASSWORD = "Create-pw1"
SUFFIX = f"{os.getpid() % 100000}"
ALICE, BOB = f"crra{SUFFIX}", f"crrb{SUFFIX}"
READ_WRITE = 0x0012019F
FILE_READ_ATTRIBUTES = 0x80
FILE_INTERNAL_INFORMATION = 6
FILE_OPEN_BY_FILE_ID = 0x2000
LEVEL_LEASE = 0xFF
RENAME_EXCHANGE = 2
# SMB2_CREATE_POSIX (the SMB 3.1.1 POSIX extensions' context): smbring does not know it
POSIX_CONTEXT = bytes.fromhex("93AD25509CB411E7B42383DE968BCD7C")


@pytest.fixture(scope="module")
def accounts():
    yield from unix_accounts(ALICE, BOB)


@pytest.fixture(scope="module")
def server(accounts, tmp_path_factory):
    for started in project_share_server(tmp_path_factory.mktemp("create"), "smbring-create-",
                                        (ALICE, BOB), PASSWORD):
        yield dict(started, accounts=accounts)


class Conn(UserTree):
    def __init__(self, server, user: str = ALICE):
        super().__init__(server["port"], user, PASSWORD)


def unix_sid(user: str) -> bytes:
    return acl.unix_user(pwd.getpwnam(user).pw_uid)


def descriptor(owner: bytes, aces: list[tuple[bytes, int]]) -> bytes:
    """A self-relative descriptor owned by `owner` whose DACL allows each (SID, mask)."""
    return acl.Descriptor(control=acl.SE_SELF_RELATIVE | acl.SE_DACL_PRESENT, owner=owner,
                          dacl=[acl.Ace(acl.ALLOWED, 0, mask, who) for who, mask in aces]).pack()


def context_entry(name: bytes, data: bytes, *, nxt: int = 0, name_off: int = 16, data_off: int | None = None) -> bytes:
    """One create context, its fields as given (data at the next 8-byte boundary after the
    name unless `data_off` says otherwise)."""
    if data_off is None:
        data_off = (name_off + len(name) + 7) // 8 * 8 if data else 0
    entry = bytearray(struct.pack("<IHHHHI", nxt, name_off, len(name), 0, data_off, len(data)))
    entry += b"\0" * (name_off - 16) + name
    if data:
        entry += b"\0" * max(0, data_off - len(entry))
        entry[data_off:data_off + len(data)] = data
    return bytes(entry)


def chain(*entries: bytes) -> bytes:
    """Create contexts chained with Next fields pointing at the next 8-byte boundary."""
    return wire.chain(entries, 8)


def create_raw(tree, name: str, contexts: bytes, *, access: int = READ_WRITE, disposition: int = wire.FILE_CREATE,
               oplock: int = 0):
    """A CREATE whose context buffer is `contexts`, byte for byte."""
    body = bytearray(create_body(name, access, disposition, 0, oplock=oplock))
    offset = 64 + len(body) + (-(64 + len(body)) % 8)
    body += b"\0" * (offset - 64 - len(body))
    struct.pack_into("<II", body, 48, offset, len(contexts))
    return tree.request(wire.CREATE, bytes(body + contexts))


def lease_request(key: int) -> bytes:
    return bytes([key]) * 16 + struct.pack("<IIQ", 7, 0, 0)    # READ | HANDLE | WRITE, v1


# -- the context chain ------------------------------------------------------------------------

MALFORMED_CHAINS = {
    # Next not a multiple of 8 (the second context right after the first's 20 bytes)
    "next-unaligned": struct.pack("<IHHHHI", 20, 16, 4, 0, 0, 0) + b"MxAc"
    + struct.pack("<IHHHHI", 0, 16, 4, 0, 0, 0) + b"QFid",
    # Next beyond the buffer
    "next-outside": struct.pack("<IHHHHI", 64, 16, 4, 0, 0, 0) + b"MxAc",
    # the name not at offset 16: in the context's own header, or after a gap
    "name-in-header": struct.pack("<IHHHHI", 0, 0, 4, 0, 0, 0) + b"MxAc",
    "name-after-a-gap": context_entry(b"MxAc", b"", name_off=24),
    # the data not 8-byte aligned, or overlapping the name
    "data-unaligned": context_entry(b"AlSi", bytes(8), data_off=20),
    "data-over-name": context_entry(b"AlSi", bytes(8), data_off=16),
    # data past the buffer's end
    "data-outside": struct.pack("<IHHHHI", 0, 16, 4, 0, 24, 64) + b"AlSi" + bytes(12),
    # a name shorter than four bytes
    "short-name": context_entry(b"MxA", b""),
    # fewer than 16 bytes where a context should be
    "truncated": chain(context_entry(b"MxAc", b""), b"QFid\0\0\0\0"),
}


@pytest.mark.parametrize("label", sorted(MALFORMED_CHAINS))
def test_malformed_context_chain_is_refused(server, label):
    """Each context must be laid out as Samba's smb2_create_blob_parse takes it (name at
    offset 16, data 8-byte aligned after it, Next 8-byte aligned, all inside the buffer):
    else STATUS_INVALID_PARAMETER and nothing made. Before, smbring read most of these
    (names anywhere, data overlapping the name, a Next past the end ending the chain)."""
    name = f"chain-{label}.txt"
    with Conn(server) as c:
        r = create_raw(c.tree, name, MALFORMED_CHAINS[label])
        assert r.status == wire.STATUS_INVALID_PARAMETER, r
    assert not (server["share"] / name).exists()


def test_unknown_contexts_are_ignored(server):
    """Unknown tags (four bytes, or a GUID such as the POSIX extensions' context, which
    smbring does not implement) are ignored: the file is made as without them, its mode the
    create mask's (the POSIX context's setuid, setgid and world-writable bits are not applied)."""
    posix = struct.pack("<I", 0o6777)
    with Conn(server) as c:
        r = create_raw(c.tree, "unknown-ctx.txt", chain(context_entry(b"Zzzz", b"abc"),
                                                          context_entry(POSIX_CONTEXT, posix)))
        assert r.status == wire.STATUS_SUCCESS, r
        c.tree.close(r.file_id)
    mode = (server["share"] / "unknown-ctx.txt").stat().st_mode & 0o7777
    assert mode & 0o7000 == 0 and not mode & 0o002, oct(mode)


def test_first_of_two_contexts_with_one_name_counts(server):
    """Two lease contexts: the first is the one granted (as Samba's smb2_create_blob_find), so
    smbring and a filter reading the request as Samba does see one request. Before, the last
    one counted."""
    with Conn(server) as c:
        r = create_raw(c.tree, "two-leases.txt", chain(context_entry(b"RqLs", lease_request(1)),
                                                        context_entry(b"RqLs", lease_request(2))),
                       oplock=LEVEL_LEASE)
        assert r.status == wire.STATUS_SUCCESS, r
        assert create_contexts_of(r)[b"RqLs"][:16] == bytes([1]) * 16
        c.tree.close(r.file_id)


BAD_SIZES = {"AlSi-short": (b"AlSi", bytes(4)), "AlSi-long": (b"AlSi", bytes(16)),
             "TWrp-short": (b"TWrp", bytes(4)), "MxAc-short": (b"MxAc", bytes(4)),
             "QFid-data": (b"QFid", bytes(4)), "ExtA-short": (b"ExtA", bytes(3))}


@pytest.mark.parametrize("label", sorted(BAD_SIZES))
def test_fixed_size_context_of_the_wrong_size_is_refused(server, label):
    """AlSi holds 8 bytes, TWrp 8, MxAc none or 8, QFid none, ExtA at least one EA: another
    size is STATUS_INVALID_PARAMETER, nothing made (as Samba). Before, AlSi was padded with
    zeros, an ExtA too short for an EA was an empty list, and the others were taken as they
    came."""
    name = f"size-{label}.txt"
    with Conn(server) as c:
        r = c.tree.create(name, READ_WRITE, wire.FILE_CREATE, contexts=[BAD_SIZES[label]])
        assert r.status == wire.STATUS_INVALID_PARAMETER, r
    assert not (server["share"] / name).exists()


def test_previous_version_is_never_found(server):
    """TWrp (a snapshot's time): smbring keeps none, so no name is found through one, outside
    the share or in it (as a server with no snapshots answers)."""
    (server["share"] / "twrp.txt").write_bytes(b"now")
    with Conn(server) as c:
        for name in ("twrp.txt", "..\\twrp.txt", "shared\\..\\twrp.txt"):
            r = c.tree.create(name, wire.GENERIC_READ, wire.FILE_OPEN, contexts=[(b"TWrp", struct.pack("<Q", 1))])
            assert r.status in (wire.STATUS_OBJECT_NAME_NOT_FOUND, wire.STATUS_OBJECT_PATH_SYNTAX_BAD), (name, r)


# -- options and dispositions -------------------------------------------------------------------

@pytest.mark.parametrize("options,disposition", [
    (wire.FILE_DIRECTORY_FILE | wire.FILE_NON_DIRECTORY_FILE, wire.FILE_CREATE),
    (wire.FILE_DIRECTORY_FILE | wire.FILE_NON_DIRECTORY_FILE, wire.FILE_OPEN_IF),
    (wire.FILE_DIRECTORY_FILE, wire.FILE_SUPERSEDE),
    (wire.FILE_DIRECTORY_FILE, wire.FILE_OVERWRITE),
    (wire.FILE_DIRECTORY_FILE, wire.FILE_OVERWRITE_IF),
], ids=["dir-and-nondir-create", "dir-and-nondir-open-if", "dir-supersede", "dir-overwrite", "dir-overwrite-if"])
def test_contradictory_directory_options_are_refused(server, options, disposition):
    """An open is of a directory or of a file, and a directory is never truncated: both
    options, or FILE_DIRECTORY_FILE with a truncating disposition, are STATUS_INVALID_PARAMETER
    and nothing is made, on a new name or an existing directory (MS-FSA 2.1.5.1; Samba and
    Windows). Before, smbring made (or opened) a directory."""
    (server["share"] / "existing-dir").mkdir(exist_ok=True)
    with Conn(server) as c:
        for name in (f"contra-{options}-{disposition}", "existing-dir"):
            r = c.tree.create(name, wire.GENERIC_ALL, disposition, options)
            assert r.status == wire.STATUS_INVALID_PARAMETER, (name, r)
    assert not (server["share"] / f"contra-{options}-{disposition}").exists()


def test_open_by_file_id_is_not_supported(server):
    """FILE_OPEN_BY_FILE_ID names a file by its id, not its path: never supported (no file,
    inside the share or out of it, is reached by an id), STATUS_NOT_SUPPORTED as Samba answers."""
    ino = (server["share"] / "shared").stat().st_ino
    with Conn(server) as c:
        for name in (struct.pack("<Q", ino).decode("utf-16-le"), "shared"):
            r = c.tree.create(name, wire.GENERIC_READ, wire.FILE_OPEN, FILE_OPEN_BY_FILE_ID)
            assert r.status == wire.STATUS_NOT_SUPPORTED, r


def test_system_security_and_reserved_rights_are_refused(server):
    """ACCESS_SYSTEM_SECURITY needs a privilege no session holds; reserved access bits are
    STATUS_ACCESS_DENIED (MS-SMB2 3.3.5.9)."""
    (server["share"] / "rights.txt").write_bytes(b"x")
    with Conn(server) as c:
        r = c.tree.create("rights.txt", wire.GENERIC_READ | acl.ACCESS_SYSTEM_SECURITY)
        assert r.status == wire.STATUS_PRIVILEGE_NOT_HELD, r
        r = c.tree.create("rights.txt", wire.GENERIC_READ | 0x00000200)
        assert r.status == wire.STATUS_ACCESS_DENIED, r


@pytest.mark.parametrize("name", ["dir:$I30:$INDEX_ALLOCATION", "dir::$INDEX_ALLOCATION", "f.txt:s:$BITMAP",
                                  "f\0.txt", "..\\f.txt", "shared\\..\\..\\f.txt", "a" * 256,
                                  "../f.txt", "shared/../../f.txt", "dir/..\\../f.txt", "dir/:$I30:$INDEX_ALLOCATION"])
def test_names_that_reach_nothing(server, name):
    """Stream types other than $DATA, NUL, a component over 255 bytes and `..` above the
    share reach nothing (as Samba, which refuses these too)."""
    (server["share"] / "dir").mkdir(exist_ok=True)
    (server["share"] / "f.txt").write_bytes(b"x")
    with Conn(server) as c:
        r = c.tree.create(name, wire.GENERIC_READ, wire.FILE_OPEN)
        assert r.status in (wire.STATUS_OBJECT_NAME_INVALID, wire.STATUS_OBJECT_PATH_SYNTAX_BAD), r


def rename_info(name: str, replace: bool = False) -> bytes:
    encoded = name.encode("utf-16-le")
    return struct.pack("<B7xQI", replace, 0, len(encoded)) + encoded


def test_a_forward_slash_separates_as_a_backslash_does(server):
    """smbd reads "/" in an SMB2 path as a separator (smbtorture's smb2.timestamps opens
    "smb2-timestamps/testfile.dat"): a CREATE and a rename's new name reach the file in the
    directory, as with a backslash, and no component ever holds a slash."""
    share = server["share"]
    (share / "slashed").mkdir(exist_ok=True)
    os.chown(share / "slashed", pwd.getpwnam(ALICE).pw_uid, -1)
    with Conn(server) as c:
        fid = c.tree.open("slashed/made.txt", READ_WRITE | wire.DELETE, wire.FILE_CREATE)
        assert (share / "slashed" / "made.txt").is_file()
        assert c.tree.write(fid, b"through a slash").status == wire.STATUS_SUCCESS
        r = c.tree.set_info(fid, 1, 10, rename_info("slashed//moved.txt"))
        assert r.status == wire.STATUS_SUCCESS, r
        c.tree.close(fid)
        assert (share / "slashed" / "moved.txt").read_bytes() == b"through a slash"
        assert not (share / "slashed" / "made.txt").exists()
        fid = c.tree.open("/slashed\\moved.txt")      # a leading slash names the share's root
        c.tree.close(fid)


def test_the_creator_of_a_read_only_file_writes_through_its_handle(server):
    """A CREATE that makes a file with the READONLY attribute and asks to write it: its handle
    writes (Windows and smbd: the attribute speaks for later opens; smbtorture's
    durable-open.read-only writes so), a later open for writing is refused, and the file on
    disk is r--r--r-- and the account's. (The creator's write was STATUS_INVALID_HANDLE: the
    handle held a descriptor opened again, read-only.)"""
    share = server["share"] / "shared"
    with Conn(server) as c:
        r = c.tree.create("shared\\made-read-only.txt", READ_WRITE, wire.FILE_CREATE, attributes=0x1)
        assert r.status == wire.STATUS_SUCCESS, r
        assert c.tree.write(r.file_id, b"written by its maker").status == wire.STATUS_SUCCESS
        assert c.tree.read(r.file_id, 64).status == wire.STATUS_SUCCESS
        c.tree.close(r.file_id)
        assert c.tree.create("shared\\made-read-only.txt", READ_WRITE, wire.FILE_OPEN).status == \
            wire.STATUS_ACCESS_DENIED
    path = share / "made-read-only.txt"
    assert path.read_bytes() == b"written by its maker"
    assert path.stat().st_mode & 0o777 == 0o444 and path.stat().st_uid == pwd.getpwnam(ALICE).pw_uid


# -- SecD and ExtA ------------------------------------------------------------------------------

def sacl_descriptor() -> bytes:
    sacl = struct.pack("<BBHHH", 2, 0, 8, 0, 0)
    return struct.pack("<BBHIIII", 1, 0, acl.SE_SELF_RELATIVE | acl.SE_SACL_PRESENT, 0, 0, 20, 0) + sacl


@pytest.mark.parametrize("name", ["sacl.txt", "sacl-stream.txt:s"])
def test_descriptor_with_a_sacl_is_refused(server, name):
    """A SACL is set only with ACCESS_SYSTEM_SECURITY, which no open holds (SET_INFO refuses
    it): a SecD context carrying one is STATUS_ACCESS_DENIED and nothing is made, as in Samba.
    Before, the CREATE stored the SACL."""
    with Conn(server) as c:
        r = c.tree.create(name, READ_WRITE, wire.FILE_CREATE, contexts=[(b"SecD", sacl_descriptor())])
        assert r.status == wire.STATUS_ACCESS_DENIED, r
    assert not (server["share"] / name.split(":")[0]).exists()


@pytest.mark.parametrize("owner,status", [
    (lambda: unix_sid(BOB), wire.STATUS_INVALID_OWNER),
    (lambda: acl.ROOT_SID, wire.STATUS_INVALID_OWNER),
    (lambda: acl.SYSTEM, wire.STATUS_INVALID_OWNER),
], ids=["bob", "root", "system"])
def test_new_file_cannot_name_another_owner(server, owner, status):
    """ALICE's SecD naming another owner (BOB, root, SYSTEM) is STATUS_INVALID_OWNER, for a
    file, a directory and the file of a new stream, and nothing is made."""
    sd = acl.Descriptor(control=acl.SE_SELF_RELATIVE, owner=owner()).pack()
    with Conn(server) as c:
        for name, options in (("owned.txt", 0), ("owned-dir", wire.FILE_DIRECTORY_FILE), ("owned-s.txt:s", 0)):
            r = c.tree.create(name, READ_WRITE, wire.FILE_CREATE, options, contexts=[(b"SecD", sd)])
            assert r.status == status, (name, r)
            assert not (server["share"] / name.split(":")[0]).exists()


@pytest.mark.parametrize("ea_name", [b"smbring.sd", b"SMBRING.SD", b"smbring.streams", b"DOSATTRIB", b"SAMBA_PAI",
                                     b"DosStream.x:$DATA", b"a\0b", b"\xe9t\xe9"])
def test_ea_context_cannot_reach_the_servers_metadata(server, ea_name):
    """An ExtA context naming the server's own xattrs (or Samba's), in any case, is refused,
    as is a name with a NUL or outside ASCII; the file made for it is removed again."""
    with Conn(server) as c:
        r = c.tree.create("ea-private.txt", READ_WRITE, wire.FILE_CREATE, contexts=[(b"ExtA", full_ea_list([(ea_name, b"v")]))])
        assert r.status in (wire.STATUS_ACCESS_DENIED, wire.STATUS_INVALID_PARAMETER), r
    assert not (server["share"] / "ea-private.txt").exists()


def bobs_file_alice_may_write_but_not_ea(server, name: str) -> None:
    """BOB's file (0666), its descriptor granting ALICE writing and reading but not FILE_WRITE_EA."""
    alice_rights = (READ_WRITE | wire.DELETE) & ~wire.FILE_WRITE_EA
    sd = descriptor(unix_sid(BOB), [(unix_sid(BOB), acl.FILE_ALL_ACCESS), (unix_sid(ALICE), alice_rights)])
    with Conn(server, BOB) as c:
        fid = c.tree.open(f"shared\\{name}", READ_WRITE, wire.FILE_CREATE, contexts=[(b"SecD", sd)])
        assert c.tree.write(fid, b"bob's data").status == wire.STATUS_SUCCESS
        c.tree.close(fid)
    (server["share"] / "shared" / name).chmod(0o666)


@pytest.mark.parametrize("disposition", [wire.FILE_OVERWRITE, wire.FILE_OVERWRITE_IF, wire.FILE_SUPERSEDE])
def test_overwrite_storing_eas_needs_write_ea(server, disposition):
    """An overwrite with an ExtA context stores its EAs on the file: as SET_INFO would, with
    FILE_WRITE_EA granted (Samba's set_ea). ALICE, whom BOB's descriptor lets write his file
    but not its EAs, is refused (STATUS_ACCESS_DENIED) before anything is truncated; with
    GENERIC_WRITE (which holds FILE_WRITE_EA) on her own file it works. Before, the CREATE
    stored her EA on his file and truncated it."""
    name = f"ow-ea-{disposition}.txt"
    bobs_file_alice_may_write_but_not_ea(server, name)
    path = server["share"] / "shared" / name
    with Conn(server) as c:
        r = c.tree.create(f"shared\\{name}", wire.FILE_WRITE_DATA | FILE_READ_ATTRIBUTES, disposition,
                          contexts=[(b"ExtA", full_ea_list([(b"planted", b"v")]))])
        assert r.status == wire.STATUS_ACCESS_DENIED, r
        assert path.read_bytes() == b"bob's data"
        assert "user.planted" not in os.listxattr(path)
        own = f"ow-ea-own-{disposition}.txt"
        c.tree.close(c.tree.open(own, READ_WRITE, wire.FILE_CREATE))
        r = c.tree.create(own, wire.GENERIC_WRITE | wire.GENERIC_READ, disposition,
                          contexts=[(b"ExtA", full_ea_list([(b"mine", b"v")]))])
        assert r.status == wire.STATUS_SUCCESS, r
        c.tree.close(r.file_id)
    assert os.getxattr(server["share"] / own, "user.mine") == b"v"


# -- a name pointed at another file while the CREATE runs ---------------------------------------

def test_create_opens_the_file_it_judged(server):
    """A CREATE looks its name up more than once (its stat, the open that reads the stored
    descriptor, the open the client gets). Another process may rename a file over the name
    between them: here a local process (as root) standing for another worker, or another
    server on the same directory, exchanges ALICE's file `mine` with a hard link to BOB's
    file (0666, but his descriptor lets only him in) as fast as it can, while ALICE opens
    `mine` to write it. She must never get a handle to BOB's file. Before, about a quarter
    of her opens were judged on her own file and opened his."""
    shared = server["share"] / "shared"
    bob = pwd.getpwnam(BOB)
    sd = descriptor(unix_sid(BOB), [(unix_sid(BOB), acl.FILE_ALL_ACCESS)])
    with Conn(server, BOB) as c:
        fid = c.tree.open("shared\\victim.txt", READ_WRITE, wire.FILE_CREATE, contexts=[(b"SecD", sd)])
        c.tree.write(fid, b"bob's data")
        c.tree.close(fid)
    (shared / "victim.txt").chmod(0o666)
    os.link(shared / "victim.txt", shared / "vlink")
    with Conn(server) as c:
        assert c.tree.create("shared\\victim.txt", wire.FILE_WRITE_DATA).status == wire.STATUS_ACCESS_DENIED
        c.tree.close(c.tree.open("shared\\mine", READ_WRITE, wire.FILE_CREATE))
    (shared / "mine").chmod(0o666)
    victim = (shared / "victim.txt").stat().st_ino
    assert (shared / "victim.txt").stat().st_uid == bob.pw_uid

    libc = ctypes.CDLL(None, use_errno=True)
    stop = threading.Event()

    def exchange() -> None:
        fd = os.open(shared, os.O_RDONLY | os.O_DIRECTORY)
        try:
            while not stop.is_set():
                libc.renameat2(fd, b"mine", fd, b"vlink", RENAME_EXCHANGE)
        finally:
            os.close(fd)

    swapper = threading.Thread(target=exchange)
    swapper.start()
    opened = got_bobs = 0
    try:
        with Conn(server) as c:
            end = time.monotonic() + 4
            while time.monotonic() < end:
                r = c.tree.create("shared\\mine", wire.FILE_WRITE_DATA | FILE_READ_ATTRIBUTES, wire.FILE_OPEN)
                if r.status != wire.STATUS_SUCCESS:
                    continue
                opened += 1
                q = c.tree.query_info(r.file_id, wire.INFO_FILE, FILE_INTERNAL_INFORMATION)
                if q.status == wire.STATUS_SUCCESS and struct.unpack("<Q", q.buffer(2))[0] == victim:
                    got_bobs += 1
                c.tree.close(r.file_id)
    finally:
        stop.set()
        swapper.join()
    assert got_bobs == 0, f"{got_bobs} of {opened} opens reached BOB's file"
    assert opened > 0           # (her own file still opens)
    assert (shared / "victim.txt").read_bytes() == b"bob's data"
