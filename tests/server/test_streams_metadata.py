"""A file's own metadata through the handle of one of its named streams, on a server started
as root acting as two Unix accounts: the security descriptor, the DOS attributes and the
times belong to the file, not to the stream (MS-FSA keeps them per file; Samba answers
through the stream's base file). Set through `file:stream`, they are the file's, seen
through the file's own handle; they are stored as the user, with no more right than the
user has on the file (WRITE_DAC judged by the file's descriptor, the kernel's judgement of
the user on the file itself), never as the server on the stream's file in the depot.
Requests through smbprotocol."""
from __future__ import annotations

import os
import shutil
import struct
import sys
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1]))
from servers import spawn_for_accounts, stop, unix_accounts  # noqa: E402

if os.geteuid() != 0 or not shutil.which("useradd"):
    pytest.skip("acting as Unix accounts needs root (and useradd)", allow_module_level=True)
pytest.importorskip("smbprotocol")

from smbprotocol.connection import Connection  # noqa: E402
from smbprotocol.exceptions import SMBResponseException  # noqa: E402
from smbprotocol.open import Open, SMB2QueryInfoRequest, SMB2QueryInfoResponse, SMB2SetInfoRequest  # noqa: E402
from smbprotocol.session import Session  # noqa: E402
from smbprotocol.tree import TreeConnect  # noqa: E402

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
INFO_FILE, INFO_SECURITY = 1, 3
BASIC, ACCESS_INFORMATION = 4, 8
DACL_PART = 0x4
ALL_PARTS = 0x7     # owner, group, DACL
ACCESS_DENIED = 0xC0000022
NT_2020 = 132223104000000000     # 2020-01-01T00:00:00Z as an NT time
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


class Client:
    """One SMB session and tree, raw requests through smbprotocol."""

    def __init__(self, port: int, user: str):
        self.conn = Connection(uuid.uuid4(), "127.0.0.1", port)
        self.conn.connect()
        self.session = Session(self.conn, user, PASSWORD, require_encryption=False)
        self.session.connect()
        self.tree = TreeConnect(self.session, r"\\127.0.0.1\share")
        self.tree.connect()

    def open(self, name: str, access: int, disposition: int = OPEN) -> Open:
        f = Open(self.tree, name)
        f.create(2, access, 0, 7, disposition, 0)
        return f

    def status(self, name: str, access: int, disposition: int = OPEN) -> int:
        """The NTSTATUS of the open (0: it opened, and is closed again)."""
        try:
            self.open(name, access, disposition).close()
        except SMBResponseException as e:
            return e.status
        return 0

    def _send(self, req):
        return self.conn.receive(self.conn.send(req, sid=self.session.session_id, tid=self.tree.tree_connect_id))

    def set_info(self, f: Open, info_type: int, klass: int, buffer: bytes, parts: int = 0) -> int:
        req = SMB2SetInfoRequest()
        req["info_type"], req["file_info_class"] = info_type, klass
        req["additional_information"], req["file_id"], req["buffer"] = parts, f.file_id, buffer
        try:
            self._send(req)
        except SMBResponseException as e:
            return e.status
        return 0

    def query_info(self, f: Open, info_type: int, klass: int, parts: int = 0) -> bytes:
        req = SMB2QueryInfoRequest()
        req["info_type"], req["file_info_class"] = info_type, klass
        req["additional_information"], req["output_buffer_length"] = parts, 65536
        req["file_id"] = f.file_id
        resp = SMB2QueryInfoResponse()
        resp.unpack(self._send(req)["data"].get_value())
        return resp["buffer"].get_value()

    def sd(self, f: Open) -> bytes:
        return self.query_info(f, INFO_SECURITY, 0, ALL_PARTS)

    def basic(self, f: Open) -> tuple[int, int, int, int, int]:
        """CreationTime, LastAccessTime, LastWriteTime, ChangeTime, FileAttributes."""
        return struct.unpack_from("<qqqqI", self.query_info(f, INFO_FILE, BASIC))

    def set_basic(self, f: Open, attrs: int = 0, write_time: int = 0) -> int:
        return self.set_info(f, INFO_FILE, BASIC, struct.pack("<qqqqII", 0, 0, write_time, 0, attrs, 0))

    def close(self) -> None:
        self.conn.disconnect(True)


@contextmanager
def client(server, user: str):
    c = Client(server["port"], user)
    try:
        yield c
    finally:
        c.close()


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
        assert c.set_info(s, INFO_SECURITY, 0, dacl((FILE_ALL, alice_sid)), DACL_PART) == 0
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
        assert c.set_info(f, INFO_SECURITY, 0, dacl((FILE_ALL, alice_sid), (FILE_READ, bob_sid)), DACL_PART) == 0
        f.close()
    stored = os.getxattr(server["shared"] / "grouped-sd.txt", SD_XATTR)
    with client(server, BOB) as c:
        for access in (WRITE_DAC, READ_DATA | WRITE_DAC, WRITE_DATA, MAXIMUM_ALLOWED | WRITE_DAC):
            assert c.status(r"shared\grouped-sd.txt:s", access) == ACCESS_DENIED, hex(access)
        s = c.open(r"shared\grouped-sd.txt:s", MAXIMUM_ALLOWED)
        granted = struct.unpack("<I", c.query_info(s, INFO_FILE, ACCESS_INFORMATION))[0]
        assert not granted & (WRITE_DAC | WRITE_DATA), hex(granted)
        assert c.set_info(s, INFO_SECURITY, 0, dacl((FILE_ALL, bob_sid)), DACL_PART) == ACCESS_DENIED
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
        assert c.set_basic(s, ATTR_HIDDEN, NT_2020) == 0
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


def test_another_user_cannot_set_the_file_s_attributes_or_times_through_a_stream(server):
    """BOB may write grouped.txt (his group's) but does not own it: as through the file's own
    handle, he may neither make it read-only nor set its times (the kernel lets only the
    owner), through its stream either; the file is as it was."""
    path = server["shared"] / "grouped.txt"
    before = path.stat()
    with client(server, BOB) as c:
        f = c.open(r"shared\grouped.txt", READ_ATTRIBUTES | WRITE_ATTRIBUTES)
        s = c.open(r"shared\grouped.txt:s", READ_DATA | READ_ATTRIBUTES | WRITE_ATTRIBUTES)
        for handle in (f, s):
            assert c.set_basic(handle, ATTR_READONLY) == ACCESS_DENIED
            assert c.set_basic(handle, 0, NT_2020) == ACCESS_DENIED
        assert not c.basic(s)[4] & ATTR_READONLY
        s.close()
        f.close()
    after = path.stat()
    assert (after.st_mode, after.st_mtime_ns) == (before.st_mode, before.st_mtime_ns)
