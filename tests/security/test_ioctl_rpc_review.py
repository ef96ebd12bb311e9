"""Adversarial review of server-side copy, the other IOCTLs and the named pipes, by two real Unix
accounts against a server started as root (tests/server/test_ioctl_copy.py has the copy's
limits, its access checks by one user, locks and a read-only share; test_share_enum_access.py,
test_share_listing.py and test_lsarpc_smbcacls.py the listings and lookups; tests/smb/
test_rpc_malformed.py the NDR reader itself). What is tried here, and what the server answers:

1. Server-side copy: another *user's* resume key (his own connection, and a second session on
   the owner's connection); a key whose open was closed with its tree connect, or by LOGOFF,
   then asked again by a new session of the same user; keys forged with a live FileId; a
   directory's key; chunk offsets at 2^63 and 2^64 - 1; a copy onto itself with overlapping
   ranges; DUPLICATE_EXTENTS_TO_FILE naming another user's, another tree's or a closed FileId,
   a source without READ_DATA, a target without WRITE_DATA, negative and wrapping offsets.
2. Other controls: FSCTL_SET_REPARSE_POINT with a symbolic link's reparse data leading out of
   the share (nothing made), FSCTL_DELETE_REPARSE_POINT, FSCTL_GET_OBJECT_ID, sparse and
   zeroing controls through a read-only handle (data unchanged), QUERY_ALLOCATED_RANGES
   without READ_DATA, FSCTL_PIPE_TRANSCEIVE and FSCTL_PIPE_WAIT on a file and on a share,
   every file control on a named pipe's handle, an unknown FSCTL asking for 4 GiB of
   output, an IOCTL without SMB2_0_IOCTL_IS_FSCTL, QUERY_NETWORK_INTERFACE_INFO without a
   session.
3. Named pipes: pipes not served (winreg, samr, netlogon, spoolss, `..` in the name), opening
   one on a disk share, a BIND of 255 contexts of 255 transfer syntaxes each (more than the
   PDU holds), a REQUEST whose fragments never end, an alloc_hint of 4 GiB, a REQUEST before
   the BIND, NetrShareEnum with a container count of 2^32 - 1, unknown opnums, a transceive
   on a pipe another session opened. The server answers each with a status or a fault and
   serves the next client; its memory stays bounded.
"""
from __future__ import annotations

import os
import shutil
import struct
import tempfile
from pathlib import Path

import pytest
from raw import FID_ANY, RawClient
from servers import spawn_for_accounts, stop, unix_accounts
from smbcore import ioctl_body

from smbring.smb import wire
from smbring.smb.rpc import pdu, srvsvc

if os.geteuid() != 0 or not shutil.which("useradd"):
    pytest.skip("acting as Unix accounts needs root (and useradd)", allow_module_level=True)

PASSWORD = "Review-pw1"
SUFFIX = f"{os.getpid() % 100000}"
ALICE, BOB = f"irra{SUFFIX}", f"irrb{SUFFIX}"

FSCTL_SRV_REQUEST_RESUME_KEY = 0x00140078
FSCTL_SRV_COPYCHUNK = 0x001440F2
FSCTL_SRV_COPYCHUNK_WRITE = 0x001480F2
FSCTL_DUPLICATE_EXTENTS_TO_FILE = 0x00098344
FSCTL_SET_REPARSE_POINT = 0x000900A4
FSCTL_DELETE_REPARSE_POINT = 0x000900AC
FSCTL_GET_OBJECT_ID = 0x0009009C
FSCTL_CREATE_OR_GET_OBJECT_ID = 0x000900C0
FSCTL_SET_SPARSE = 0x000900C4
FSCTL_SET_ZERO_DATA = 0x000980C8
FSCTL_QUERY_ALLOCATED_RANGES = 0x000940CF
FSCTL_SET_COMPRESSION = 0x0009C040
FSCTL_FILE_LEVEL_TRIM = 0x00098208
FSCTL_PIPE_TRANSCEIVE = 0x0011C017
FSCTL_PIPE_WAIT = 0x00110018
FSCTL_QUERY_NETWORK_INTERFACE_INFO = 0x001401FC
FSCTL_SRV_ENUMERATE_SNAPSHOTS = 0x00144064
IO_REPARSE_TAG_SYMLINK = 0xA000000C

STATUS_INVALID_VIEW_SIZE = 0xC000001F
STATUS_FS_DRIVER_REQUIRED = 0xC000019C
STATUS_PIPE_DISCONNECTED = 0xC00000B0
ALL = wire.FILE_ALL_ACCESS
READ_ONLY = wire.FILE_READ_DATA | 0x80            # READ_DATA, READ_ATTRIBUTES
SECRET = b"alice's secret, never bob's " * 64


@pytest.fixture(scope="module")
def accounts():
    yield from unix_accounts(ALICE, BOB)


@pytest.fixture(scope="module")
def server(accounts, tmp_path_factory):
    """`share` (1777) and `other` (1777, another directory) writable, `ro` on share's
    directory, read only. ALICE's secret file is 0600 in `share`."""
    tmp = tmp_path_factory.mktemp("review")
    top = Path(tempfile.mkdtemp(prefix="smbring-review-", dir="/tmp"))
    top.chmod(0o755)
    share, other = top / "share", top / "other"
    for d in (share, other):
        d.mkdir()
        d.chmod(0o1777)
    secret = share / "secret.txt"
    secret.write_bytes(SECRET)
    os.chown(secret, *accounts[ALICE])
    secret.chmod(0o600)
    proc, port, log = spawn_for_accounts(
        tmp, share, (ALICE, BOB), PASSWORD,
        more=f"[other]\npath = {other}\nread only = no\n[ro]\npath = {share}\nread only = yes\n")
    yield {"port": port, "share": share, "other": other, "proc": proc, "log": log, "accounts": accounts}
    stop(proc)
    shutil.rmtree(top, ignore_errors=True)


class User:
    """One connection and session of a user, trees by share name."""

    def __init__(self, server, user: str):
        self.raw = RawClient(server["port"])
        assert self.raw.negotiate((wire.SMB311,)).status == wire.STATUS_SUCCESS
        self.session = self.raw.logon(user, PASSWORD)
        self.trees = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.raw.close()

    def tree(self, share: str = "share"):
        if share not in self.trees:
            self.trees[share] = self.raw.tree(self.session, share)
        return self.trees[share]

    def open(self, name: str, access: int = ALL, disposition: int = wire.FILE_OPEN_IF, share: str = "share",
             options: int = 0) -> bytes:
        return self.tree(share).open(name, access, disposition, options)

    def ioctl(self, fid: bytes, ctl: int, data: bytes = b"", max_out: int = 65536, share: str = "share",
              flags: int = 1):
        """(status, output buffer) of an IOCTL (b"" for an error response)."""
        body = bytearray(ioctl_body(fid, ctl, data, max_out))
        struct.pack_into("<I", body, 48, flags)
        r = self.tree(share).request(wire.IOCTL, bytes(body), payload=max(len(data), min(max_out, 1 << 20)))
        out = r.buffer(32, "<II") if r.body[:2] == b"\x31\x00" else b""
        return r.status, out

    def resume_key(self, fid: bytes, share: str = "share") -> bytes:
        status, out = self.ioctl(fid, FSCTL_SRV_REQUEST_RESUME_KEY, max_out=32, share=share)
        assert status == wire.STATUS_SUCCESS and len(out) == 32, hex(status)
        return out[:24]

    def copy(self, key: bytes, dst: bytes, chunks, ctl=FSCTL_SRV_COPYCHUNK_WRITE, share: str = "share"):
        data = struct.pack("<24sII", key, len(chunks), 0) + b"".join(
            struct.pack("<QQII", s, t, n, 0) for s, t, n in chunks)
        status, out = self.ioctl(dst, ctl, data, 12, share)
        return status, (struct.unpack("<III", out) if len(out) == 12 else None)


def bytes_of(server, name: str, share: str = "share") -> bytes:
    return (server[share] / name).read_bytes()


# -- 1. server-side copy ----------------------------------------------------------------------

def test_another_users_resume_key_copies_nothing(server):
    """BOB cannot read ALICE's 0600 file; ALICE's key of it (read on the wire, say) gives
    him nothing, on his own connection or as a second session on ALICE's connection."""
    with User(server, ALICE) as alice, User(server, BOB) as bob:
        key = alice.resume_key(alice.open("secret.txt", READ_ONLY, wire.FILE_OPEN))
        assert bob.tree().create("secret.txt", READ_ONLY).status == wire.STATUS_ACCESS_DENIED
        dst = bob.open("bob-stolen.txt")
        assert bob.copy(key, dst, [(0, 0, 1024)]) == (wire.STATUS_OBJECT_NAME_NOT_FOUND, None)
        assert bob.copy(key, dst, [(0, 0, 1024)], FSCTL_SRV_COPYCHUNK)[0] == wire.STATUS_OBJECT_NAME_NOT_FOUND
        s2 = alice.raw.logon(BOB, PASSWORD)
        t2 = alice.raw.tree(s2, "share")
        dst2 = t2.open("bob-stolen2.txt", ALL, wire.FILE_OPEN_IF)
        body = struct.pack("<24sII", key, 1, 0) + struct.pack("<QQII", 0, 0, 1024, 0)
        assert t2.request(wire.IOCTL, ioctl_body(dst2, FSCTL_SRV_COPYCHUNK_WRITE, body, 12)).status == \
            wire.STATUS_OBJECT_NAME_NOT_FOUND
        # nor as the source of a clone: another session's FileId is closed to him
        clone = struct.pack("<16sqqq", key[:16], 0, 0, 1024)
        assert bob.ioctl(dst, FSCTL_DUPLICATE_EXTENTS_TO_FILE, clone)[0] == wire.STATUS_FILE_CLOSED
    assert bytes_of(server, "bob-stolen.txt") == b"" and bytes_of(server, "bob-stolen2.txt") == b""


def test_a_key_dies_with_its_open_tree_and_session(server):
    """The open a key named is gone (its tree disconnected, its session logged off): the key
    is refused, also to a new session of the same user that opens the file again."""
    with User(server, ALICE) as alice:
        key = alice.resume_key(alice.open("secret.txt", READ_ONLY, wire.FILE_OPEN))
        assert alice.tree().disconnect().status == wire.STATUS_SUCCESS
        del alice.trees["share"]
        dst = alice.open("after-tdis.txt")
        assert alice.copy(key, dst, [(0, 0, 64)])[0] == wire.STATUS_OBJECT_NAME_NOT_FOUND
        key2 = alice.resume_key(alice.open("secret.txt", READ_ONLY, wire.FILE_OPEN))
        assert key2 != key
        assert alice.raw.logoff(alice.session).status == wire.STATUS_SUCCESS
        alice.session, alice.trees = alice.raw.logon(ALICE, PASSWORD), {}
        dst = alice.open("after-logoff.txt")
        assert alice.copy(key2, dst, [(0, 0, 64)])[0] == wire.STATUS_OBJECT_NAME_NOT_FOUND
    assert bytes_of(server, "after-tdis.txt") == b"" and bytes_of(server, "after-logoff.txt") == b""


def test_forged_keys_and_a_directorys_key(server):
    with User(server, ALICE) as alice:
        src = alice.open("secret.txt", READ_ONLY, wire.FILE_OPEN)
        dst = alice.open("forged-dst.txt")
        real = alice.resume_key(src)
        for key in (src + bytes(8), src + real[16:23] + bytes([real[23] ^ 1]), bytes(24), b"\xff" * 24):
            assert alice.copy(key, dst, [(0, 0, 64)])[0] == wire.STATUS_OBJECT_NAME_NOT_FOUND, key.hex()
        d = alice.open("a-dir", ALL, wire.FILE_OPEN_IF, options=wire.FILE_DIRECTORY_FILE)
        assert alice.ioctl(d, FSCTL_SRV_REQUEST_RESUME_KEY, max_out=32)[0] == wire.STATUS_INVALID_PARAMETER
        # a directory as the target
        assert alice.copy(real, d, [(0, 0, 64)])[0] == wire.STATUS_INVALID_DEVICE_REQUEST
        # a key asked with no room for it
        assert alice.ioctl(src, FSCTL_SRV_REQUEST_RESUME_KEY, max_out=31)[0] == wire.STATUS_BUFFER_TOO_SMALL
    assert bytes_of(server, "forged-dst.txt") == b""


def test_offsets_at_the_top_of_64_bits(server):
    """Chunk offsets near 2^63 and 2^64 - 1: the source's end (INVALID_VIEW_SIZE) or the
    largest file (DISK_FULL), never a wrap to the start, an overflow or a crash."""
    with User(server, ALICE) as alice:
        src = alice.open("top-src.txt")
        alice.tree().write(src, b"x" * 4096)
        dst = alice.open("top-dst.txt")
        key = alice.resume_key(src)
        top = (1 << 64) - 1
        for s, t, status in (((1 << 63) - 1, 0, STATUS_INVALID_VIEW_SIZE), (top, 0, STATUS_INVALID_VIEW_SIZE),
                             (top - 4095, 0, STATUS_INVALID_VIEW_SIZE), (0, 1 << 63, wire.STATUS_DISK_FULL),
                             (0, top - 10, wire.STATUS_DISK_FULL), (0, (1 << 63) - 4096, wire.STATUS_DISK_FULL)):
            assert alice.copy(key, dst, [(s, t, 4096)]) == (status, (0, 0, 0)), (s, t)
        # a clone: signed offsets, negative or wrapping
        for s, t, n in ((-1, 0, 10), (0, -1, 10), (0, 0, -1), ((1 << 63) - 1, 0, (1 << 63) - 1),
                        (0, (1 << 63) - 1, (1 << 63) - 1)):
            status, _ = alice.ioctl(dst, FSCTL_DUPLICATE_EXTENTS_TO_FILE, struct.pack("<16sqqq", src, s, t, n))
            assert status in (wire.STATUS_INVALID_PARAMETER, wire.STATUS_NOT_SUPPORTED), (s, t, n, hex(status))
    assert bytes_of(server, "top-dst.txt") == b""


def test_a_copy_onto_itself_with_overlapping_ranges(server):
    """The same file as source and target, ranges that overlap: an answer (the copy made
    as a read then a write, or refused), never a corrupt file beyond the target range."""
    data = bytes(range(256)) * 64
    with User(server, ALICE) as alice:
        fid = alice.open("overlap.bin")
        alice.tree().write(fid, data)
        key = alice.resume_key(fid)
        status, counts = alice.copy(key, fid, [(0, 100, 8192)])
        assert status in (wire.STATUS_SUCCESS, wire.STATUS_INVALID_PARAMETER), hex(status)
        got = bytes_of(server, "overlap.bin")
        assert got[:100] == data[:100] and got[8292:] == data[8292:]
        assert got[100:8292] in (data[:8192], data[100:8292])


def test_duplicate_extents_checks_both_handles(server):
    """The source must be this session's and tree's, open for READ_DATA; the target open for
    WRITE_DATA (a read-only handle, a read-only share: ACCESS_DENIED)."""
    with User(server, ALICE) as alice:
        src = alice.open("dup-src.txt")
        alice.tree().write(src, b"s" * 8192)
        dst = alice.open("dup-dst.txt")
        alice.tree().write(dst, b"d" * 8192)
        no_read = alice.open("dup-src.txt", wire.FILE_WRITE_DATA | 0x80, wire.FILE_OPEN)
        read_only_dst = alice.open("dup-dst.txt", READ_ONLY, wire.FILE_OPEN)
        other_tree_src = alice.open("dup-src-other.txt", share="other")
        ro_dst = alice.open("dup-dst.txt", READ_ONLY, wire.FILE_OPEN, share="ro")

        def clone(target, source, share="share"):
            return alice.ioctl(target, FSCTL_DUPLICATE_EXTENTS_TO_FILE,
                               struct.pack("<16sqqq", source, 0, 0, 4096), share=share)[0]
        assert clone(dst, no_read) == wire.STATUS_ACCESS_DENIED
        assert clone(read_only_dst, src) == wire.STATUS_ACCESS_DENIED
        assert clone(dst, other_tree_src) == wire.STATUS_FILE_CLOSED
        assert clone(ro_dst, src, "ro") == wire.STATUS_FILE_CLOSED       # (src is another tree's)
        assert clone(dst, b"\0" * 16) == wire.STATUS_FILE_CLOSED
    assert bytes_of(server, "dup-dst.txt") == b"d" * 8192


# -- 2. other controls ------------------------------------------------------------------------

def symlink_reparse(target: str) -> bytes:
    """REPARSE_DATA_BUFFER of a symbolic link (MS-FSCC 2.1.2.4), absolute."""
    name = target.encode("utf-16-le")
    body = struct.pack("<HHHHI", 0, len(name), len(name), len(name), 0) + name + name
    return struct.pack("<IHH", IO_REPARSE_TAG_SYMLINK, len(body), 0) + body


def test_no_reparse_point_or_link_can_be_made(server):
    """SET_REPARSE_POINT with a link to /etc (and to a name in the share): NOT_SUPPORTED, the
    file stays a plain file; DELETE_REPARSE_POINT and GET_OBJECT_ID likewise."""
    with User(server, ALICE) as alice:
        fid = alice.open("would-be-link")
        for target in ("/etc/shadow", "\\??\\C:\\etc\\shadow", "..\\..\\etc", "secret.txt"):
            assert alice.ioctl(fid, FSCTL_SET_REPARSE_POINT, symlink_reparse(target))[0] == \
                wire.STATUS_NOT_SUPPORTED
        assert alice.ioctl(fid, FSCTL_DELETE_REPARSE_POINT, struct.pack("<IHH", IO_REPARSE_TAG_SYMLINK, 0, 0))[0] \
            == wire.STATUS_NOT_SUPPORTED
        assert alice.ioctl(fid, FSCTL_GET_OBJECT_ID)[0] == wire.STATUS_NOT_SUPPORTED
        status, out = alice.ioctl(fid, FSCTL_CREATE_OR_GET_OBJECT_ID)
        assert status == wire.STATUS_SUCCESS and len(out) == 64
    path = server["share"] / "would-be-link"
    assert path.is_file() and not path.is_symlink()
    assert not any(p.is_symlink() for p in server["share"].iterdir())


def test_changing_controls_need_write_access(server):
    """A handle open for reading only: SET_SPARSE, SET_ZERO_DATA, SET_COMPRESSION and
    FILE_LEVEL_TRIM are ACCESS_DENIED and the data stays; QUERY_ALLOCATED_RANGES needs
    READ_DATA. BOB's handle on ALICE's world-readable file is read-only too."""
    path = server["share"] / "zero-me.bin"
    path.write_bytes(b"z" * 8192)
    os.chown(path, *server["accounts"][ALICE])
    path.chmod(0o644)
    with User(server, BOB) as bob:
        assert bob.tree().create("zero-me.bin", wire.FILE_WRITE_DATA).status == wire.STATUS_ACCESS_DENIED
        fid = bob.open("zero-me.bin", READ_ONLY, wire.FILE_OPEN)
        assert bob.ioctl(fid, FSCTL_SET_SPARSE, b"\1")[0] == wire.STATUS_ACCESS_DENIED
        assert bob.ioctl(fid, FSCTL_SET_ZERO_DATA, struct.pack("<qq", 0, 8192))[0] == wire.STATUS_ACCESS_DENIED
        assert bob.ioctl(fid, FSCTL_SET_COMPRESSION, b"\0\0")[0] == wire.STATUS_ACCESS_DENIED
        assert bob.ioctl(fid, FSCTL_FILE_LEVEL_TRIM, struct.pack("<IIqq", 0, 1, 0, 8192))[0] == \
            wire.STATUS_ACCESS_DENIED
        attrs_only = bob.open("zero-me.bin", 0x80, wire.FILE_OPEN)
        assert bob.ioctl(attrs_only, FSCTL_QUERY_ALLOCATED_RANGES, struct.pack("<qq", 0, 8192))[0] == \
            wire.STATUS_ACCESS_DENIED
        # the read-only share, for ALICE who may write the file
    with User(server, ALICE) as alice:
        fid = alice.open("zero-me.bin", READ_ONLY, wire.FILE_OPEN, share="ro")
        assert alice.ioctl(fid, FSCTL_SET_ZERO_DATA, struct.pack("<qq", 0, 8192), share="ro")[0] == \
            wire.STATUS_ACCESS_DENIED
    assert path.read_bytes() == b"z" * 8192


def test_pipe_controls_on_files_and_file_controls_on_pipes(server):
    """TRANSCEIVE and WAIT on a disk share are not pipe operations (NOT_SUPPORTED), whatever
    the handle; on IPC$, a file control on a pipe's handle is FS_DRIVER_REQUIRED, a disk
    FileId is closed there, a pipe of another session closed too."""
    with User(server, ALICE) as alice, User(server, BOB) as bob:
        fid = alice.open("not-a-pipe.txt")
        alice.tree().write(fid, b"file data")
        assert alice.ioctl(fid, FSCTL_PIPE_TRANSCEIVE, srvsvc_bind())[0] == wire.STATUS_NOT_SUPPORTED
        assert alice.ioctl(FID_ANY, FSCTL_PIPE_WAIT, pipe_wait("srvsvc"))[0] == wire.STATUS_NOT_SUPPORTED
        ipc = alice.tree("IPC$")
        pipe = ipc.open("srvsvc", wire.GENERIC_READ | wire.GENERIC_WRITE)
        for ctl in (FSCTL_SRV_REQUEST_RESUME_KEY, FSCTL_SET_SPARSE, FSCTL_SET_ZERO_DATA, FSCTL_QUERY_ALLOCATED_RANGES,
                    FSCTL_DUPLICATE_EXTENTS_TO_FILE, FSCTL_CREATE_OR_GET_OBJECT_ID, FSCTL_SRV_COPYCHUNK_WRITE):
            status, _ = alice.ioctl(pipe, ctl, b"\0" * 40, share="IPC$")
            assert status == STATUS_FS_DRIVER_REQUIRED, (hex(ctl), hex(status))
        assert alice.ioctl(fid, FSCTL_PIPE_TRANSCEIVE, srvsvc_bind(), share="IPC$")[0] == wire.STATUS_FILE_CLOSED
        # a pipe of ALICE's, named on BOB's IPC$
        assert bob.ioctl(pipe, FSCTL_PIPE_TRANSCEIVE, srvsvc_bind(), share="IPC$")[0] == wire.STATUS_FILE_CLOSED
        # short and lying FSCTL_PIPE_WAIT buffers
        for data in (b"", b"\0" * 13, struct.pack("<qIBB", 0, 0xFFFFFFFF, 0, 0) + b"x"):
            assert alice.ioctl(FID_ANY, FSCTL_PIPE_WAIT, data, share="IPC$")[0] == wire.STATUS_INVALID_PARAMETER
        assert alice.ioctl(FID_ANY, FSCTL_PIPE_WAIT, pipe_wait("winreg"), share="IPC$")[0] == \
            wire.STATUS_OBJECT_NAME_NOT_FOUND
    assert bytes_of(server, "not-a-pipe.txt") == b"file data"


def pipe_wait(name: str) -> bytes:
    raw = name.encode("utf-16-le")
    return struct.pack("<qIBB", 0, len(raw), 0, 0) + raw


def test_unknown_and_odd_ioctls(server):
    with User(server, ALICE) as alice:
        fid = alice.open("odd-ioctl.txt")
        # 4 GiB of output asked for: beyond MaxTransactSize, refused before anything runs
        assert alice.ioctl(fid, 0x00091234, b"", max_out=0xFFFFFFFF)[0] == wire.STATUS_INVALID_PARAMETER
        assert alice.ioctl(fid, 0x00091234)[0] == wire.STATUS_NOT_SUPPORTED
        # previous versions are a file's (none): a request naming no open finds none
        assert alice.ioctl(FID_ANY, FSCTL_SRV_ENUMERATE_SNAPSHOTS, max_out=16)[0] == wire.STATUS_FILE_CLOSED
        # Flags without SMB2_0_IOCTL_IS_FSCTL (an IOCTL, not an FSCTL): NOT_SUPPORTED, as smbd
        for ctl in (FSCTL_SRV_REQUEST_RESUME_KEY, FSCTL_SET_ZERO_DATA, FSCTL_QUERY_NETWORK_INTERFACE_INFO):
            assert alice.ioctl(fid, ctl, struct.pack("<qq", 0, 1), flags=0)[0] == wire.STATUS_NOT_SUPPORTED
            assert alice.ioctl(fid, ctl, struct.pack("<qq", 0, 1), flags=0xFFFFFFFE)[0] == wire.STATUS_NOT_SUPPORTED


def test_network_interfaces_need_a_session_and_a_tree(server):
    c = RawClient(server["port"])
    try:
        assert c.negotiate((wire.SMB311,)).status == wire.STATUS_SUCCESS
        body = ioctl_body(FID_ANY, FSCTL_QUERY_NETWORK_INTERFACE_INFO, b"", 65536)
        assert c.request(wire.IOCTL, body, payload=65536).status == wire.STATUS_USER_SESSION_DELETED
        s = c.logon(ALICE, PASSWORD)
        assert c.request(wire.IOCTL, body, session=s, tree_id=0x4242,
                         payload=65536).status == wire.STATUS_NETWORK_NAME_DELETED
    finally:
        c.close()


# -- 3. named pipes -----------------------------------------------------------------------------

def srvsvc_bind(contexts: bytes | None = None, count: int = 1) -> bytes:
    if contexts is None:
        contexts = struct.pack("<HBB", 0, 1, 0) + srvsvc.SYNTAX.pack() + pdu.NDR.pack()
    body = struct.pack("<HHIB3x", 4280, 4280, 0, count) + contexts
    return pdu.header(pdu.BIND, pdu.PFC_FIRST_FRAG | pdu.PFC_LAST_FRAG, pdu.HEADER_SIZE + len(body), 1) + body


def request(opnum: int, stub: bytes, call_id: int = 2, flags: int = pdu.PFC_FIRST_FRAG | pdu.PFC_LAST_FRAG,
            alloc_hint: int | None = None) -> bytes:
    body = struct.pack("<IHH", len(stub) if alloc_hint is None else alloc_hint, 0, opnum) + stub
    return pdu.header(pdu.REQUEST, flags, pdu.HEADER_SIZE + len(body), call_id) + body


class PipeOf:
    def __init__(self, user: User, name: str = "srvsvc"):
        self.user = user
        self.ipc = user.tree("IPC$")
        self.fid = self.ipc.open(name, wire.GENERIC_READ | wire.GENERIC_WRITE)

    def transceive(self, data: bytes, max_out: int = 4280):
        status, out = self.user.ioctl(self.fid, FSCTL_PIPE_TRANSCEIVE, data, max_out, share="IPC$")
        return status, (pdu.Header.parse(out) if len(out) >= pdu.HEADER_SIZE else None), out

    def bound(self) -> "PipeOf":
        status, hdr, _ = self.transceive(srvsvc_bind())
        assert status == wire.STATUS_SUCCESS and hdr.ptype == pdu.BIND_ACK
        return self


def fault_status(out: bytes) -> int:
    return struct.unpack_from("<I", out, 24)[0]


def test_pipes_not_served_are_not_found(server):
    with User(server, ALICE) as alice:
        ipc = alice.tree("IPC$")
        for name in ("winreg", "samr", "netlogon", "spoolss", "eventlog", "svcctl", "\\PIPE\\samr",
                     "PIPE\\..\\srvsvc", "srvsvc\\..\\samr", "srvsvc:stream", "srvsvc\0", ""):
            assert ipc.create(name, wire.GENERIC_READ | wire.GENERIC_WRITE).status == \
                wire.STATUS_OBJECT_NAME_NOT_FOUND, repr(name)
        # on a disk share a pipe's name is a file's (none there; a leading backslash is invalid)
        assert alice.tree().create("PIPE\\srvsvc", wire.GENERIC_READ).status == wire.STATUS_OBJECT_PATH_NOT_FOUND
        assert alice.tree().create("\\PIPE\\srvsvc", wire.GENERIC_READ).status == wire.STATUS_INVALID_PARAMETER


def test_a_bind_of_more_contexts_than_it_holds(server):
    """255 contexts each claiming 255 transfer syntaxes, in a 4 KiB PDU: BIND_NAK (or a
    fault), the association ends (PIPE_DISCONNECTED after), the server serves on."""
    with User(server, ALICE) as alice:
        p = PipeOf(alice)
        contexts = (struct.pack("<HBB", 0, 255, 0) + srvsvc.SYNTAX.pack() + pdu.NDR.pack()) * 150
        status, hdr, _ = p.transceive(srvsvc_bind(contexts, 255))
        assert status == wire.STATUS_SUCCESS and hdr.ptype in (pdu.BIND_NAK, pdu.FAULT)
        assert p.transceive(request(15, b""))[0] == STATUS_PIPE_DISCONNECTED
        assert PipeOf(alice).bound() is not None


def test_a_request_that_never_ends_or_announces_4_gib(server):
    with User(server, ALICE) as alice:
        p = PipeOf(alice).bound()
        first = request(15, b"\0" * 4000, flags=pdu.PFC_FIRST_FRAG)
        middle = request(15, b"\0" * 4000, flags=0)
        assert p.user.tree("IPC$").write(p.fid, first).status == wire.STATUS_SUCCESS
        status = wire.STATUS_SUCCESS
        for _ in range(40):         # 160 KB of one request: cut at 64 KiB
            status = p.user.tree("IPC$").write(p.fid, middle).status
            if status != wire.STATUS_SUCCESS:
                break
        assert status == STATUS_PIPE_DISCONNECTED
        q = PipeOf(alice).bound()
        status, hdr, out = q.transceive(request(15, b"\0" * 64, alloc_hint=0xFFFFFFFF))
        assert status == wire.STATUS_SUCCESS and hdr.ptype == pdu.FAULT
        # a REQUEST before any BIND
        r = PipeOf(alice)
        status, hdr, out = r.transceive(request(15, b""))
        assert status == wire.STATUS_SUCCESS and hdr.ptype in (pdu.BIND_NAK, pdu.FAULT)


def net_share_enum_stub(level: int, count: int, array_count: int | None) -> bytes:
    """NetrShareEnum's stub: no server name, the level, a container (pointer) whose count is
    `count` and whose array (pointer, conformance `array_count`) is sent empty."""
    stub = struct.pack("<I", 0) + struct.pack("<II", level, level) + struct.pack("<III", 0x20000, count, 0x20004)
    if array_count is not None:
        stub += struct.pack("<I", array_count)
    return stub + struct.pack("<III", 0xFFFFFFFF, 0, 0)


def test_hostile_counts_in_a_share_enumeration_fault(server):
    with User(server, ALICE) as alice:
        p = PipeOf(alice).bound()
        for level, count, array_count in ((1, 0xFFFFFFFF, 0xFFFFFFFF), (2, 0x40000000, 0x40000000),
                                          (502, 5, 5), (1, 3, 4)):
            status, hdr, out = p.transceive(request(15, net_share_enum_stub(level, count, array_count)))
            assert status == wire.STATUS_SUCCESS and hdr.ptype == pdu.FAULT, (level, count)
            assert fault_status(out) == pdu.FAULT_NDR
        # the pipe goes on: an honest enumeration, then opnums nobody serves
        status, hdr, out = p.transceive(request(15, net_share_enum_stub(1, 0, None)[:-12] + struct.pack("<I", 0)
                                                + struct.pack("<III", 0xFFFFFFFF, 0, 0)))
        assert status == wire.STATUS_SUCCESS and hdr.ptype == pdu.RESPONSE
        for opnum in (0, 14, 255, 0xFFFF):
            status, hdr, out = p.transceive(request(opnum, b"\0" * 32))
            assert hdr.ptype == pdu.FAULT and fault_status(out) == pdu.NCA_S_OP_RNG_ERROR, opnum


def test_the_server_serves_on_and_its_memory_stays_bounded(server):
    """After a burst of malformed BINDs and requests on many pipes, other clients are
    served and the server's resident memory has not grown by more than a few MiB."""
    def rss() -> int:
        for line in Path(f"/proc/{server['proc'].pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0
    before = rss()
    with User(server, BOB) as bob:
        for _ in range(30):
            p = PipeOf(bob)
            contexts = (struct.pack("<HBB", 0, 255, 0) + srvsvc.SYNTAX.pack() + pdu.NDR.pack()) * 150
            p.transceive(srvsvc_bind(contexts, 255))
            bob.tree("IPC$").close(p.fid)
            q = PipeOf(bob).bound()
            q.transceive(request(15, b"\0" * 4000, flags=pdu.PFC_FIRST_FRAG))
            bob.tree("IPC$").close(q.fid)
    with User(server, ALICE) as alice:
        assert alice.raw.echo().status == wire.STATUS_SUCCESS
        assert PipeOf(alice).bound() is not None
    assert rss() - before < 16 * 1024, f"RSS grew by {rss() - before} KiB"


def test_server_log_is_clean(server):
    assert server["proc"].poll() is None
    text = server["log"].read_text()
    assert "Traceback" not in text, text[-3000:]

