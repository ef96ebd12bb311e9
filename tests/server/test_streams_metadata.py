"""A file's own metadata through the handle of one of its named streams, on a server started
as root acting as two Unix accounts: the security descriptor, the DOS attributes and the
times belong to the file, not to the stream (MS-FSA keeps them per file; Samba answers
through the stream's base file). Set through `file:stream`, they are the file's, seen
through the file's own handle; they are stored as the user, with no more right than the
user has on the file (WRITE_DAC judged by the file's descriptor, the kernel's judgement of
the user on the file itself), never as the server on the stream's file in the depot. So are
the EAs, the READONLY attribute that forbids deleting a stream, and the times and attributes
a stream's CREATE response shows. A file made by the CREATE of its first stream (`new:s`)
is made as a plain CREATE of `new` makes it: its directory's DACL asked, its inherited or
SecD descriptor, its mode, its DOS attributes. Requests through smbprotocol."""
from __future__ import annotations

import os
import shutil
import struct
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1]))
from servers import spawn_for_accounts, stop, unix_accounts  # noqa: E402

if os.geteuid() != 0 or not shutil.which("useradd"):
    pytest.skip("acting as Unix accounts needs root (and useradd)", allow_module_level=True)
pytest.importorskip("smbprotocol")

from smbprotocol.exceptions import SMBResponseException  # noqa: E402
from smbprotocol_user import UserClient, create_context  # noqa: E402

from smbring.smb import acl  # noqa: E402

PASSWORD = "Streams-md1"
SUFFIX = f"{os.getpid() % 100000}"
ALICE, BOB = f"srma{SUFFIX}", f"srmb{SUFFIX}"
DEPOT = ".smbring-streams"
SD_XATTR = "user.smbring.sd"

READ_DATA, WRITE_DATA, READ_ATTRIBUTES, WRITE_ATTRIBUTES = 0x1, 0x2, 0x80, 0x100
READ_CONTROL, WRITE_DAC, MAXIMUM_ALLOWED = 0x20000, 0x40000, 0x02000000
FILE_READ, FILE_ALL = 0x001200A9, 0x001F01FF
OPEN, OPEN_IF = 1, 3
ATTR_READONLY, ATTR_HIDDEN, ATTR_ARCHIVE, ATTR_NORMAL = 0x1, 0x2, 0x20, 0x80
INFO_FILE = 1
DACL_PART = 0x4
ACCESS_DENIED = 0xC0000022
NT_2020 = 132223104000000000     # 2020-01-01T00:00:00Z as an NT time
WRITTEN_2020 = (0, 0, NT_2020, 0)   # FileBasicInformation's times: last written then, the others kept
UNIX_2020_NS = 1577836800 * 10**9


@pytest.fixture(scope="module")
def accounts():
    yield from unix_accounts(ALICE, BOB)


@pytest.fixture(scope="module")
def server(accounts, tmp_path_factory):
    """share/ (root's 0755) with shared/ (1777) holding ALICE's files, each with a stream
    `s` made by her before the test: private.txt, readable.txt (0644: BOB reads it, may not
    write it), grouped.txt and grouped-sd.txt (0664, BOB's group: BOB may write them),
    times.txt (0644)."""
    tmp = tmp_path_factory.mktemp("streams-md")
    top = Path(tempfile.mkdtemp(prefix="smbring-streams-md-", dir="/tmp"))
    top.chmod(0o755)
    share = top / "share"
    shared = share / "shared"
    shared.mkdir(parents=True)
    share.chmod(0o755)
    shared.chmod(0o1777)
    alice, bob = accounts[ALICE], accounts[BOB]
    for name, mode, owner in (("private.txt", 0o644, alice), ("readable.txt", 0o644, alice),
                              ("grouped.txt", 0o664, (alice[0], bob[1])),
                              ("grouped-sd.txt", 0o664, (alice[0], bob[1])), ("times.txt", 0o644, alice)):
        (shared / name).write_text(f"{name} data")
        (shared / name).chmod(mode)
        os.chown(shared / name, *owner)
    proc, port, log = spawn_for_accounts(tmp, share, (ALICE, BOB), PASSWORD)
    srv = {"port": port, "share": share, "shared": shared, "accounts": accounts, "log": log}
    try:
        with client(srv, ALICE) as c:
            for name in ("private.txt", "readable.txt", "grouped.txt", "grouped-sd.txt", "times.txt"):
                f = c.open(rf"shared\{name}:s", READ_DATA | WRITE_DATA, OPEN_IF)
                f.write(b"the stream's data", 0)
                f.close()
        yield srv
    finally:
        stop(proc)
        shutil.rmtree(top, ignore_errors=True)


def client(server, user: str) -> UserClient:
    return UserClient("127.0.0.1", server["port"], user, PASSWORD, "share")


def unix_sid(kind: int, number: int) -> bytes:
    """S-1-22-kind-number (Samba's Unix user, 1, and group, 2, SIDs), binary."""
    return struct.pack("<BB", 1, 2) + (22).to_bytes(6, "big") + struct.pack("<II", kind, number)


def dacl(*aces: tuple[int, bytes]) -> bytes:
    """A self-relative descriptor with a DACL only, of allowing ACEs (mask, SID)."""
    body = b"".join(struct.pack("<BBHI", 0, 0, 8 + len(who), mask) + who for mask, who in aces)
    return struct.pack("<BBHIIII", 1, 0, 0x8004, 0, 0, 0, 20) + \
        struct.pack("<BBHHH", 2, 0, 8 + len(body), len(aces), 0) + body


def allowed(descriptor: bytes) -> dict[bytes, int]:
    return {a.sid: a.mask for a in acl.parse(descriptor).dacl}


def stream_path(server, name: str, stream: str = "s") -> Path:
    sid = os.getxattr(server["shared"] / name, "user.smbring.streams").decode()
    return server["share"] / DEPOT / sid / stream


# -- the security descriptor ------------------------------------------------------------------------
def test_a_descriptor_set_through_a_stream_is_the_file_s(server):
    """ALICE stores a DACL through private.txt:s that leaves BOB out: it is the file's (read
    back through the file's handle, and through the stream's), so BOB, whom the mode bits
    (0644) let read the file, can open neither the file nor its stream any more."""
    alice_sid = unix_sid(1, server["accounts"][ALICE][0])
    with client(server, BOB) as c:
        assert c.status(r"shared\private.txt", READ_DATA) == 0
    with client(server, ALICE) as c:
        s = c.open(r"shared\private.txt:s", READ_DATA | READ_CONTROL | WRITE_DAC)
        assert c.set_sd(s, dacl((FILE_ALL, alice_sid)), DACL_PART) == 0
        f = c.open(r"shared\private.txt", READ_CONTROL)
        assert allowed(c.sd(f)) == {alice_sid: FILE_ALL}
        assert c.sd(s) == c.sd(f)
        assert acl.parse(c.sd(f)).owner == alice_sid
        f.close()
        s.close()
    assert os.getxattr(server["shared"] / "private.txt", SD_XATTR)
    with pytest.raises(OSError):
        os.getxattr(stream_path(server, "private.txt"), SD_XATTR)
    with client(server, BOB) as c:
        for name in (r"shared\private.txt", r"shared\private.txt:s"):
            for access in (READ_DATA, READ_CONTROL, WRITE_DAC):
                assert c.status(name, access) == ACCESS_DENIED, (name, hex(access))
    with client(server, ALICE) as c:
        assert c.status(r"shared\private.txt:s", READ_DATA) == 0


def test_a_stream_shows_its_file_s_descriptor(server):
    """Queried through the stream, the descriptor is the file's (its owner, group and mode),
    not the one the stream's own file in the depot would give (0600, written by anyone who
    owns it)."""
    os.chmod(server["shared"] / "readable.txt", 0o444)
    try:
        with client(server, ALICE) as c:
            s = c.open(r"shared\readable.txt:s", READ_DATA | READ_CONTROL)
            f = c.open(r"shared\readable.txt", READ_CONTROL)
            assert c.sd(s) == c.sd(f)
            assert acl.parse(c.sd(s)).owner == unix_sid(1, server["accounts"][ALICE][0])
            assert allowed(c.sd(s)) == {acl.EVERYONE: FILE_READ}    # (no write bits: 0444)
            f.close()
            s.close()
    finally:
        os.chmod(server["shared"] / "readable.txt", 0o644)


def test_a_descriptor_through_a_stream_gives_no_more_than_the_file_s(server):
    """grouped-sd.txt: 0664 (BOB's group may write it, the kernel would let him), and a DACL
    of ALICE's giving BOB reading only. Through its stream BOB gets no WRITE_DAC, and a
    descriptor he sends through a handle he could open is refused: the file's stays hers."""
    alice_sid = unix_sid(1, server["accounts"][ALICE][0])
    bob_sid = unix_sid(1, server["accounts"][BOB][0])
    with client(server, ALICE) as c:
        f = c.open(r"shared\grouped-sd.txt", READ_CONTROL | WRITE_DAC)
        assert c.set_sd(f, dacl((FILE_ALL, alice_sid), (FILE_READ, bob_sid)), DACL_PART) == 0
        f.close()
    stored = os.getxattr(server["shared"] / "grouped-sd.txt", SD_XATTR)
    with client(server, BOB) as c:
        for access in (WRITE_DAC, READ_DATA | WRITE_DAC, WRITE_DATA, MAXIMUM_ALLOWED | WRITE_DAC):
            assert c.status(r"shared\grouped-sd.txt:s", access) == ACCESS_DENIED, hex(access)
        s = c.open(r"shared\grouped-sd.txt:s", MAXIMUM_ALLOWED)
        granted = c.granted(s)
        assert not granted & (WRITE_DAC | WRITE_DATA), hex(granted)
        assert c.set_sd(s, dacl((FILE_ALL, bob_sid)), DACL_PART) == ACCESS_DENIED
        assert allowed(c.sd(s)) == {alice_sid: FILE_ALL, bob_sid: FILE_READ}
        s.close()
    assert os.getxattr(server["shared"] / "grouped-sd.txt", SD_XATTR) == stored


def test_a_user_who_may_not_write_the_file_stores_no_descriptor_through_its_stream(server):
    """readable.txt (0644, ALICE's): BOB reads its stream, and asks for WRITE_DAC in vain."""
    with client(server, BOB) as c:
        assert c.status(r"shared\readable.txt:s", READ_DATA | READ_CONTROL) == 0
        assert c.status(r"shared\readable.txt:s", WRITE_DAC) == ACCESS_DENIED
    with pytest.raises(OSError):
        os.getxattr(server["shared"] / "readable.txt", SD_XATTR)


# -- attributes and times -----------------------------------------------------------------------------
def test_basic_information_through_a_stream_is_the_file_s(server):
    """ALICE sets HIDDEN and a write time through times.txt:s: the file gets them (its mtime,
    its attributes through its own handle); READONLY set through the stream takes the
    file's write bits, and clearing it gives them back."""
    path = server["shared"] / "times.txt"
    with client(server, ALICE) as c:
        s = c.open(r"shared\times.txt:s", READ_DATA | READ_ATTRIBUTES | WRITE_ATTRIBUTES)
        assert c.set_basic(s, ATTR_HIDDEN, WRITTEN_2020) == 0
        assert path.stat().st_mtime_ns == UNIX_2020_NS
        f = c.open(r"shared\times.txt", READ_ATTRIBUTES)
        assert c.basic(f)[4] & ATTR_HIDDEN and c.basic(f)[2] == NT_2020
        assert c.basic(s) == c.basic(f)
        assert c.set_basic(s, ATTR_READONLY) == 0
        assert path.stat().st_mode & 0o777 == 0o444
        assert c.basic(f)[4] & ATTR_READONLY
        assert c.set_basic(s, ATTR_NORMAL) == 0
        assert path.stat().st_mode & 0o200
        assert not c.basic(f)[4] & (ATTR_READONLY | ATTR_HIDDEN)
        f.close()
        s.close()
    # the stream's own file in the depot keeps none of it
    assert stream_path(server, "times.txt").stat().st_mtime_ns != UNIX_2020_NS


def test_another_user_who_may_write_the_file_sets_its_attributes_and_times_through_a_stream(server):
    """BOB may write grouped.txt (his group's) but does not own it: as Windows and Samba let
    a writer granted FILE_WRITE_ATTRIBUTES (`dos filetimes`, READONLY), he sets its times and
    makes it read-only through its stream's handle as through the file's; the file takes
    them, the stream's own file in the depot does not, and the file stays ALICE's."""
    path = server["shared"] / "grouped.txt"
    before = path.stat()
    with client(server, BOB) as c:
        s = c.open(r"shared\grouped.txt:s", READ_DATA | READ_ATTRIBUTES | WRITE_ATTRIBUTES)
        assert c.set_basic(s, 0, WRITTEN_2020) == 0
        assert c.set_basic(s, ATTR_READONLY) == 0
        assert c.basic(s)[4] & ATTR_READONLY
        s.close()
    after = path.stat()
    assert after.st_mtime_ns == UNIX_2020_NS and after.st_mode & 0o222 == 0
    assert after.st_uid == before.st_uid
    assert stream_path(server, "grouped.txt").stat().st_mtime_ns != UNIX_2020_NS
    path.chmod(before.st_mode & 0o7777)        # (as it was, for the tests after)


# -- a file made with its first stream (`new:s`) is made as a plain CREATE of `new` makes it ----------
CREATE, DIRECTORY_FILE = 2, 0x1
ALLOWED_ACE, DENIED_ACE = 0, 1
OBJECT_INHERIT, CONTAINER_INHERIT = 0x1, 0x2
INHERITABLE = OBJECT_INHERIT | CONTAINER_INHERIT
INVALID_OWNER, INVALID_PARAMETER, CANNOT_DELETE = 0xC000005A, 0xC000000D, 0xC0000121
DELETE, DELETE_ON_CLOSE = 0x10000, 0x1000


def descriptor(*aces: tuple[int, int, int, bytes], owner: bytes = b"") -> bytes:
    """A self-relative descriptor with a DACL of ACEs (type, flags, mask, SID) and, where
    given, an owner."""
    body = b"".join(struct.pack("<BBHI", kind, flags, 8 + len(who), mask) + who for kind, flags, mask, who in aces)
    dacl_blob = struct.pack("<BBHHH", 2, 0, 8 + len(body), len(aces), 0) + body
    return struct.pack("<BBHIIII", 1, 0, 0x8004, 20 + len(dacl_blob) if owner else 0, 0, 0, 20) + dacl_blob + owner


def directory_of_alice(server, name: str, sd: bytes) -> None:
    """shared/<name>, made by ALICE through SMB, with the descriptor `sd` (its DACL) set by her."""
    with client(server, ALICE) as c:
        d = c.open(rf"shared\{name}", READ_DATA | READ_CONTROL | WRITE_DAC, CREATE, options=DIRECTORY_FILE)
        assert c.set_sd(d, sd, DACL_PART) == 0
        d.close()


def test_a_file_made_with_its_first_stream_inherits_its_directory_s_descriptor(server):
    """deny-bob/ has an inheritable ACE refusing BOB reading (and one giving everyone all):
    a file ALICE makes in it with a plain CREATE, and one she makes by creating its first
    stream, both get the inherited descriptor, so BOB, whom their mode bits (0744) would let
    read them, is refused both (the stream too); he still reads their attributes, as the
    DACL gives him."""
    bob_sid = unix_sid(1, server["accounts"][BOB][0])
    directory_of_alice(server, "deny-bob", descriptor((DENIED_ACE, INHERITABLE, READ_DATA, bob_sid),
                                                      (ALLOWED_ACE, INHERITABLE, FILE_ALL, acl.EVERYONE)))
    with client(server, ALICE) as c:
        c.open(r"shared\deny-bob\plain.txt", READ_DATA | WRITE_DATA, CREATE).close()
        s = c.open(r"shared\deny-bob\x.txt:s", READ_DATA | WRITE_DATA, CREATE)
        s.write(b"alice's stream", 0)
        s.close()
        plain = c.open(r"shared\deny-bob\plain.txt", READ_CONTROL)
        made = c.open(r"shared\deny-bob\x.txt", READ_CONTROL)
        assert c.sd(made) == c.sd(plain)
        assert allowed(c.sd(made)) == {bob_sid: READ_DATA, acl.EVERYONE: FILE_ALL}
        plain.close()
        made.close()
    assert (server["shared"] / "deny-bob" / "x.txt").stat().st_mode & 0o004
    with client(server, BOB) as c:
        for name in (r"shared\deny-bob\plain.txt", r"shared\deny-bob\x.txt", r"shared\deny-bob\x.txt:s"):
            assert c.status(name, READ_DATA) == ACCESS_DENIED, name
            assert c.status(name, READ_ATTRIBUTES) == 0, name


def test_a_directory_that_refuses_adding_files_refuses_a_file_made_with_a_stream(server):
    """no-add/ (0777 on disk: the kernel would let anyone add to it) has a DACL giving BOB
    reading only, no FILE_ADD_FILE: he makes no file there, neither with a plain CREATE nor by
    creating a stream of a file that does not exist."""
    alice_sid, bob_sid = (unix_sid(1, server["accounts"][u][0]) for u in (ALICE, BOB))
    directory_of_alice(server, "no-add", descriptor((ALLOWED_ACE, INHERITABLE, FILE_ALL, alice_sid),
                                                    (ALLOWED_ACE, 0, FILE_READ, bob_sid)))
    (server["shared"] / "no-add").chmod(0o777)
    with client(server, BOB) as c:
        assert c.status(r"shared\no-add\plain.txt", READ_DATA | WRITE_DATA, CREATE) == ACCESS_DENIED
        assert c.status(r"shared\no-add\x.txt:s", READ_DATA | WRITE_DATA, CREATE) == ACCESS_DENIED
        assert c.status(r"shared\no-add\y.txt:s", READ_DATA | WRITE_DATA, OPEN_IF) == ACCESS_DENIED
    assert sorted(os.listdir(server["shared"] / "no-add")) == []


def test_a_security_descriptor_context_describes_a_file_made_with_its_stream(server):
    """The SecD create context of ALICE's CREATE of secd.txt:s is the new file's descriptor
    (BOB, whom the mode bits would let read it, is refused); one naming BOB its owner is
    refused (STATUS_INVALID_OWNER), as is a malformed one, and neither leaves a file behind."""
    alice_sid, bob_sid = (unix_sid(1, server["accounts"][u][0]) for u in (ALICE, BOB))
    with client(server, ALICE) as c:
        c.open(r"shared\secd.txt:s", READ_DATA | WRITE_DATA, CREATE,
               contexts=[create_context(b"SecD", descriptor((ALLOWED_ACE, 0, FILE_ALL, alice_sid)))]).close()
        f = c.open(r"shared\secd.txt", READ_CONTROL)
        assert allowed(c.sd(f)) == {alice_sid: FILE_ALL}
        assert acl.parse(c.sd(f)).owner == alice_sid
        f.close()
        assert c.status(r"shared\secd-bob.txt:s", READ_DATA | WRITE_DATA, CREATE,
                        contexts=[create_context(b"SecD", descriptor((ALLOWED_ACE, 0, FILE_ALL, bob_sid),
                                                                     owner=bob_sid))]) == INVALID_OWNER
        assert c.status(r"shared\secd-bad.txt:s", READ_DATA | WRITE_DATA, CREATE,
                        contexts=[create_context(b"SecD", b"\x01\x00\x04\x80" + b"\xff" * 16)]) == INVALID_PARAMETER
    assert not (server["shared"] / "secd-bob.txt").exists()
    assert not (server["shared"] / "secd-bad.txt").exists()
    assert os.stat(server["shared"] / "secd.txt").st_mode & 0o004
    with client(server, BOB) as c:
        assert c.status(r"shared\secd.txt", READ_DATA) == ACCESS_DENIED
        assert c.status(r"shared\secd.txt:s", READ_DATA) == ACCESS_DENIED


def test_attributes_asked_for_by_a_stream_create_are_the_new_file_s(server):
    """HIDDEN asked for by the CREATE of hidden.txt:s is the new file's (with ARCHIVE, as a new
    file's); READONLY asked for by that of ro.txt:s makes the file read-only (no write bits),
    its creating open still writes the stream (as a plain CREATE's writes a new read-only
    file), and a later open for writing is refused."""
    with client(server, ALICE) as c:
        c.open(r"shared\hidden.txt:s", READ_DATA | WRITE_DATA, CREATE, attrs=ATTR_HIDDEN).close()
        f = c.open(r"shared\hidden.txt", READ_ATTRIBUTES)
        assert c.basic(f)[4] & (ATTR_HIDDEN | ATTR_ARCHIVE) == ATTR_HIDDEN | ATTR_ARCHIVE
        f.close()
        s = c.open(r"shared\ro.txt:s", READ_DATA | WRITE_DATA, CREATE, attrs=ATTR_READONLY)
        s.write(b"written by its creator", 0)
        s.close()
        assert not os.stat(server["shared"] / "ro.txt").st_mode & 0o222
        f = c.open(r"shared\ro.txt", READ_ATTRIBUTES)
        assert c.basic(f)[4] & ATTR_READONLY
        f.close()
        assert c.status(r"shared\ro.txt:s", WRITE_DATA) == ACCESS_DENIED
        s = c.open(r"shared\ro.txt:s", READ_DATA)
        assert s.read(0, 100) == b"written by its creator"
        s.close()
        # a read-only file cannot be deleted on close: refused before any file is made
        assert c.status(r"shared\ro-doc.txt:s", DELETE | READ_DATA | WRITE_DATA, CREATE, attrs=ATTR_READONLY,
                        options=DELETE_ON_CLOSE) == CANNOT_DELETE
    assert not (server["shared"] / "ro-doc.txt").exists()


def posix_acl(user: int, group: int, other: int) -> bytes:
    """A minimal POSIX ACL as the kernel stores it (system.posix_acl_*): owner, group, other."""
    entry = struct.Struct("<HHI")
    return struct.pack("<I", 2) + entry.pack(0x01, user, 0xFFFFFFFF) + entry.pack(0x04, group, 0xFFFFFFFF) \
        + entry.pack(0x20, other, 0xFFFFFFFF)


def test_a_default_acl_decides_the_mode_of_a_file_made_with_its_stream(server):
    """private/ (ALICE's) has a default POSIX ACL giving group and others nothing: the file
    she makes by creating its first stream is hers alone, as one made by a plain CREATE is;
    the create mask's 0744 is not set over what the kernel made."""
    private = server["shared"] / "private"
    private.mkdir()
    os.chown(private, *server["accounts"][ALICE])
    try:
        os.setxattr(private, "system.posix_acl_default", posix_acl(7, 0, 0))
    except OSError as e:
        pytest.skip(f"no POSIX ACLs on this file system: {e}")
    with client(server, ALICE) as c:
        c.open(r"shared\private\plain.txt", READ_DATA | WRITE_DATA, CREATE).close()
        c.open(r"shared\private\x.txt:s", READ_DATA | WRITE_DATA, CREATE).close()
    for name in ("plain.txt", "x.txt"):
        assert not os.stat(private / name).st_mode & 0o077, name


# -- what else is the file's, through a stream: times and attributes in the CREATE response, the
# -- READONLY attribute that forbids deleting, the EAs ------------------------------------------------
DISPOSITION, FULL_EA, EA_INFORMATION = 13, 15, 7
READ_EA, WRITE_EA = 0x8, 0x10
NO_EAS_ON_FILE, NOT_FOUND = 0xC0000052, 0xC0000034
EA_XATTR = "user.SMBRING_EA"


def full_ea(name: bytes, value: bytes) -> bytes:
    """One FileFullEaInformation entry (MS-FSCC 2.4.15)."""
    return struct.pack("<IBBH", 0, 0, len(name), len(value)) + name + b"\0" + value


def test_the_create_response_of_a_stream_shows_its_file_s_times_and_attributes(server):
    """resp.txt is HIDDEN with a write time of 2020; its stream `s` holds 5 bytes. The CREATE
    response of resp.txt:s (opening the stream, and making another) shows the file's times
    and attributes, its own EndOfFile."""
    with client(server, ALICE) as c:
        f = c.open(r"shared\resp.txt", READ_DATA | WRITE_DATA | READ_ATTRIBUTES | WRITE_ATTRIBUTES, CREATE)
        f.write(b"the file's own data, longer than the stream's", 0)
        s = c.open(r"shared\resp.txt:s", READ_DATA | WRITE_DATA, CREATE)
        s.write(b"12345", 0)
        s.close()
        assert c.set_basic(f, ATTR_HIDDEN, WRITTEN_2020) == 0
        f.close()
        f = c.open(r"shared\resp.txt", READ_ATTRIBUTES)
        for name, disposition in ((r"shared\resp.txt:s", OPEN), (r"shared\resp.txt:t", CREATE)):
            s = c.open(name, READ_DATA | WRITE_DATA, disposition)
            assert (s.creation_time, s.last_write_time, s.change_time) == \
                (f.creation_time, f.last_write_time, f.change_time), name
            assert s.file_attributes == f.file_attributes and s.file_attributes & ATTR_HIDDEN, name
            assert s.end_of_file == (5 if disposition == OPEN else 0), name
            s.close()
        f.close()


def test_a_stream_of_a_read_only_file_cannot_be_deleted(server):
    """rodel.txt, made READONLY by ALICE after she opened its stream for DELETE: the stream's
    delete disposition is refused (STATUS_CANNOT_DELETE), as the file's own is; so is an open
    of the stream with FILE_DELETE_ON_CLOSE; both are allowed again once the file is writable.
    A stream made with the READONLY attribute on a writable file is deleted: the attribute is
    its file's (which it leaves as it was)."""
    with client(server, ALICE) as c:
        f = c.open(r"shared\rodel.txt", READ_DATA | WRITE_DATA | READ_ATTRIBUTES | WRITE_ATTRIBUTES, CREATE)
        c.open(r"shared\rodel.txt:s", READ_DATA | WRITE_DATA, CREATE).close()
        s = c.open(r"shared\rodel.txt:s", READ_DATA | DELETE)
        assert c.set_basic(f, ATTR_READONLY) == 0
        assert c.set_info(s, INFO_FILE, DISPOSITION, b"\x01") == CANNOT_DELETE
        assert c.status(r"shared\rodel.txt:s", READ_DATA | DELETE, options=DELETE_ON_CLOSE) == CANNOT_DELETE
        assert c.set_basic(f, ATTR_NORMAL) == 0
        assert c.set_info(s, INFO_FILE, DISPOSITION, b"\x01") == 0
        s.close()
        assert c.status(r"shared\rodel.txt:s", READ_DATA) == NOT_FOUND
        c.open(r"shared\rodel.txt:ro", READ_DATA | WRITE_DATA, CREATE, attrs=ATTR_READONLY).close()
        assert not c.basic(f)[4] & ATTR_READONLY
        assert c.status(r"shared\rodel.txt:ro", READ_DATA | DELETE, options=DELETE_ON_CLOSE) == 0
        assert c.status(r"shared\rodel.txt:ro", READ_DATA) == NOT_FOUND
        f.close()


def test_eas_through_a_stream_are_the_file_s(server):
    """ALICE sets an EA through eas.txt:s: it is the file's (an xattr of the file, none on the
    stream's file in the depot), read back through the file's handle and the stream's; one
    set through the file's handle is read through the stream's; removed through the stream
    (an empty value), it is gone from the file. An EA given with the CREATE of a file's
    first stream is the new file's."""
    path = server["shared"] / "eas.txt"
    with client(server, ALICE) as c:
        c.open(r"shared\eas.txt", READ_DATA | WRITE_DATA, CREATE).close()
        s = c.open(r"shared\eas.txt:s", READ_DATA | READ_EA | WRITE_EA, CREATE)
        f = c.open(r"shared\eas.txt", READ_EA | WRITE_EA)
        assert c.set_info(s, INFO_FILE, FULL_EA, full_ea(b"VIA.STREAM", b"on the file")) == 0
        assert os.getxattr(path, "user.VIA.STREAM") == b"on the file"
        assert os.listxattr(stream_path(server, "eas.txt")) == []
        assert c.set_info(f, INFO_FILE, FULL_EA, full_ea(b"VIA.FILE", b"also")) == 0
        assert c.query_info(s, INFO_FILE, FULL_EA) == c.query_info(f, INFO_FILE, FULL_EA)
        assert b"VIA.FILE" in c.query_info(s, INFO_FILE, FULL_EA)
        assert c.query_info(s, INFO_FILE, EA_INFORMATION) == c.query_info(f, INFO_FILE, EA_INFORMATION)
        for name in (b"VIA.STREAM", b"VIA.FILE"):
            assert c.set_info(s, INFO_FILE, FULL_EA, full_ea(name, b"")) == 0
        with pytest.raises(SMBResponseException) as refused:
            c.query_info(s, INFO_FILE, FULL_EA)
        assert refused.value.status == NO_EAS_ON_FILE
        f.close()
        s.close()
        c.open(r"shared\eas-new.txt:s", READ_DATA | WRITE_DATA, CREATE,
               contexts=[create_context(b"ExtA", full_ea(b"AT.CREATE", b"given"))]).close()
    assert os.getxattr(server["shared"] / "eas-new.txt", "user.AT.CREATE") == b"given"
    assert os.listxattr(stream_path(server, "eas-new.txt")) == []


def test_a_file_made_with_its_stream_is_not_left_half_made(server):
    """An EA in the CREATE of eas-sd.txt:s named as the server's own metadata (its stored
    descriptor) is refused, and the file made for it is removed again: nothing is left with
    mode bits alone (in a directory whose inherited DACL refuses BOB), and no descriptor of
    the client's is stored through an EA."""
    bob_sid = unix_sid(1, server["accounts"][BOB][0])
    directory_of_alice(server, "half-made", descriptor((DENIED_ACE, INHERITABLE, READ_DATA, bob_sid),
                                                       (ALLOWED_ACE, INHERITABLE, FILE_ALL, acl.EVERYONE)))
    everyone_all = descriptor((ALLOWED_ACE, 0, FILE_ALL, acl.EVERYONE))
    with client(server, ALICE) as c:
        status = c.status(r"shared\half-made\eas-sd.txt:s", READ_DATA | WRITE_DATA, CREATE,
                          contexts=[create_context(b"ExtA", full_ea(b"SMBRING.SD", everyone_all))])
        assert status == ACCESS_DENIED
    assert os.listdir(server["shared"] / "half-made") == []


def test_a_user_who_may_not_write_the_file_sets_no_ea_through_its_stream(server):
    """readable.txt (0644, ALICE's): BOB reads its stream but gets no FILE_WRITE_EA on it; the
    file's EAs are read through the stream as through the file."""
    os.setxattr(server["shared"] / "readable.txt", "user.ALICES", b"hers")
    try:
        with client(server, BOB) as c:
            assert c.status(r"shared\readable.txt:s", READ_DATA | WRITE_EA) == ACCESS_DENIED
            s = c.open(r"shared\readable.txt:s", READ_DATA | READ_EA)
            assert b"ALICES" in c.query_info(s, INFO_FILE, FULL_EA)
            assert c.set_info(s, INFO_FILE, FULL_EA, full_ea(b"BOBS", b"his")) == ACCESS_DENIED
            s.close()
        assert os.getxattr(server["shared"] / "readable.txt", "user.ALICES") == b"hers"
        with pytest.raises(OSError):
            os.getxattr(server["shared"] / "readable.txt", "user.BOBS")
    finally:
        os.removexattr(server["shared"] / "readable.txt", "user.ALICES")
