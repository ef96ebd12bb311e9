"""Server-side copy and the file-system controls (MS-SMB2 3.3.5.15, MS-FSCC 2.3) against a real
server: what real clients do (smbprotocol's copyfile, Samba's smbclient scopy, impacket's
IOCTL), and what a hostile one tries (another session's resume key, counts and lengths out of
bounds, copies past locks, into read-only shares and through handles without write access)."""
from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from servers import PASSWORD, USER, free_port, spawn, stop

sys.path.insert(0, str(Path(__file__).parent.parent / "security"))   # raw.py
from raw import FID_ANY, RawClient  # noqa: E402
from smbcore import ioctl_body, lock_body  # noqa: E402

from smbring.smb import wire  # noqa: E402

FSCTL_SRV_REQUEST_RESUME_KEY = 0x00140078
FSCTL_SRV_COPYCHUNK = 0x001440F2
FSCTL_SRV_COPYCHUNK_WRITE = 0x001480F2
FSCTL_DUPLICATE_EXTENTS_TO_FILE = 0x00098344
FSCTL_GET_COMPRESSION = 0x0009003C
FSCTL_SET_COMPRESSION = 0x0009C040
FSCTL_GET_REPARSE_POINT = 0x000900A8
FSCTL_SET_SPARSE = 0x000900C4
FSCTL_SET_ZERO_DATA = 0x000980C8
FSCTL_QUERY_ALLOCATED_RANGES = 0x000940CF
FSCTL_FILE_LEVEL_TRIM = 0x00098208
FSCTL_QUERY_NETWORK_INTERFACE_INFO = 0x001401FC
FSCTL_SRV_ENUMERATE_SNAPSHOTS = 0x00144064

STATUS_INVALID_VIEW_SIZE = 0xC000001F
STATUS_NOT_A_REPARSE_POINT = 0xC0000275
FILE_READ_ATTRIBUTES = 0x80
ATTR_SPARSE_FILE = 0x200
LIMITS = (256, 1 << 20, 16 << 20)
EXCLUSIVE = 0x2          # SMB2_LOCKFLAG_EXCLUSIVE_LOCK
FAIL_IMMEDIATELY = 0x10
ALL = wire.FILE_ALL_ACCESS


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One server: `rw` and `rw2` writable, `ro` the same directory as `rw`, read only."""
    root = tmp_path_factory.mktemp("ioctl")
    for name in ("rw", "rw2"):
        (root / name).mkdir()
    port = free_port()
    conf = root / "smb.conf"
    conf.write_text(f"[global]\nlisten = 127.0.0.1:{port}\ncontrol socket = none\n"
                    f"[rw]\npath = {root / 'rw'}\nread only = no\n"
                    f"[rw2]\npath = {root / 'rw2'}\nread only = no\n"
                    f"[ro]\npath = {root / 'rw'}\nread only = yes\n")
    proc, port, log = spawn(root, "--config", str(conf), port=port)
    yield {"port": port, "root": root, "proc": proc, "log": log}
    stop(proc)


class Client:
    """One connection and session of USER, trees by share name, and the IOCTLs of the tests."""

    def __init__(self, server):
        self.raw = RawClient(server["port"])
        assert self.raw.negotiate((wire.SMB311,)).status == wire.STATUS_SUCCESS
        self.session = self.raw.logon(USER, PASSWORD)
        self.trees = {}

    def tree(self, share: str = "rw"):
        if share not in self.trees:
            self.trees[share] = self.raw.tree(self.session, share)
        return self.trees[share]

    def file(self, name: str, data: bytes | None = None, access: int = ALL, share: str = "rw") -> bytes:
        """Opens (creates) the file, with `data` written first when given; its FileId."""
        tree = self.tree(share)
        fid = tree.open(name, access if data is None else ALL, wire.FILE_OPEN_IF)
        if data is not None:
            if data:
                assert tree.write(fid, data).status == wire.STATUS_SUCCESS
            if access != ALL:
                tree.close(fid)
                fid = tree.open(name, access, wire.FILE_OPEN)
        return fid

    def ioctl(self, fid: bytes, ctl: int, data: bytes = b"", max_out: int = 65536, share: str = "rw"):
        """(status, output buffer) of an IOCTL; the buffer is b"" for an error response."""
        r = self.tree(share).request(wire.IOCTL, ioctl_body(fid, ctl, data, max_out),
                                     payload=max(len(data), max_out))
        out = r.buffer(32, "<II") if r.body[:2] == b"\x31\x00" else b""
        return r.status, out

    def resume_key(self, fid: bytes, share: str = "rw") -> bytes:
        status, out = self.ioctl(fid, FSCTL_SRV_REQUEST_RESUME_KEY, max_out=32, share=share)
        assert status == wire.STATUS_SUCCESS and len(out) == 32
        return out[:24]

    def copy(self, key: bytes, dst: bytes, chunks, ctl=FSCTL_SRV_COPYCHUNK_WRITE, share: str = "rw",
             max_out: int = 12, count: int | None = None):
        """(status, (ChunksWritten, ChunkBytesWritten, TotalBytesWritten) or None)."""
        data = struct.pack("<24sII", key, len(chunks) if count is None else count, 0) + b"".join(
            struct.pack("<QQII", s, t, n, 0) for s, t, n in chunks)
        status, out = self.ioctl(dst, ctl, data, max_out, share)
        return status, (struct.unpack("<III", out) if len(out) == 12 else None)

    def close(self):
        self.raw.close()


@pytest.fixture
def client(server):
    c = Client(server)
    yield c
    c.close()


def pattern(n: int, seed: int = 0) -> bytes:
    return bytes((i * 7 + seed) % 251 for i in range(n))


# -- server-side copy ---------------------------------------------------------------------

def test_copychunk_copies_in_the_server(client, server):
    data = pattern(3 * 4096 + 100)
    src = client.file("cc-src", data)
    dst = client.file("cc-dst", b"")
    key = client.resume_key(src)
    # two chunks, the second overwriting part of the first, and one past the target's end
    chunks = [(0, 0, 8192), (8192, 8192, 4196), (100, 20000, 50)]
    for ctl in (FSCTL_SRV_COPYCHUNK, FSCTL_SRV_COPYCHUNK_WRITE):
        assert client.copy(key, dst, chunks, ctl) == (wire.STATUS_SUCCESS, (3, 0, 8192 + 4196 + 50))
    on_disk = (server["root"] / "rw" / "cc-dst").read_bytes()
    assert on_disk[:len(data)] == data
    assert on_disk[len(data):20000] == bytes(20000 - len(data))     # the gap reads as zeros
    assert on_disk[20000:] == data[100:150]


def test_copy_within_one_file_reads_the_chunk_before_writing_it(client, server):
    data = pattern(4096)
    fid = client.file("overlap", data)
    key = client.resume_key(fid)
    # source [0, 2048) and target [2040, 4088) overlap by 8 bytes
    assert client.copy(key, fid, [(0, 2040, 2048)]) == (wire.STATUS_SUCCESS, (1, 0, 2048))
    assert (server["root"] / "rw" / "overlap").read_bytes() == data[:2040] + data[:2048] + data[4088:]


def test_copy_across_shares_of_one_session(client, server):
    data = pattern(5000)
    src = client.file("across", data)
    key = client.resume_key(src)
    dst = client.file("across-dst", b"", share="rw2")
    assert client.copy(key, dst, [(0, 0, 5000)], share="rw2") == (wire.STATUS_SUCCESS, (1, 0, 5000))
    assert (server["root"] / "rw2" / "across-dst").read_bytes() == data


def test_copy_of_a_stream(client, server):
    client.file("streamy", b"base")
    src = client.file("streamy:one", pattern(300))
    dst = client.file("streamy:two", b"")
    assert client.copy(client.resume_key(src), dst, [(0, 0, 300)]) == (wire.STATUS_SUCCESS, (1, 0, 300))
    r = client.tree().read(dst, 300)
    assert r.status == wire.STATUS_SUCCESS and r.buffer(2, "<BxI") == pattern(300)


def test_copy_limits_are_answered_with_the_limits(client):
    src = client.file("lim-src", pattern(4096))
    dst = client.file("lim-dst", b"")
    key = client.resume_key(src)
    for chunks, count in [
            ([(0, 0, 0)], None),                            # an empty chunk
            ([(0, 0, (1 << 20) + 1)], None),                # a chunk over 1 MiB
            ([(0, i << 20, 1 << 20) for i in range(17)], None),   # 17 MiB in all
            ([(0, 0, 10)] * 257, None),                     # 257 chunks
            ([], 0xFFFFFFFF),                               # a hostile count, no chunks sent
    ]:
        assert client.copy(key, dst, chunks, count=count) == (wire.STATUS_INVALID_PARAMETER, LIMITS)
    # a count the buffer does not hold, a request shorter than its header, no room to answer
    assert client.copy(key, dst, [(0, 0, 10)], count=2)[0] == wire.STATUS_INVALID_PARAMETER
    assert client.ioctl(dst, FSCTL_SRV_COPYCHUNK_WRITE, key, 12)[0] == wire.STATUS_INVALID_PARAMETER
    assert client.copy(key, dst, [(0, 0, 10)], max_out=11) == (wire.STATUS_INVALID_PARAMETER, None)
    assert client.tree().read(dst, 10).status == wire.STATUS_END_OF_FILE     # nothing copied


def test_copy_past_the_source_end_stops_there(client):
    src = client.file("short-src", pattern(8192))
    dst = client.file("short-dst", b"")
    key = client.resume_key(src)
    assert client.copy(key, dst, [(0, 0, 4096), (4096, 4096, 8192)]) == (STATUS_INVALID_VIEW_SIZE, (1, 0, 4096))
    assert client.copy(key, dst, [(1 << 62, 0, 10)]) == (STATUS_INVALID_VIEW_SIZE, (0, 0, 0))
    # a target beyond the largest file
    assert client.copy(key, dst, [(0, (1 << 64) - 8, 10)])[0] == wire.STATUS_DISK_FULL


def test_resume_key_serves_its_session_only(client, server):
    """Another session (on this connection or another) cannot use a key: it cannot read a
    file it has not opened that way. Nor can a made-up key, or one of a closed file."""
    secret = b"secret data of the first session"
    src = client.file("keyed", secret)
    key = client.resume_key(src)
    other = Client(server)
    try:
        dst = other.file("stolen", b"")
        assert other.copy(key, dst, [(0, 0, len(secret))]) == (wire.STATUS_OBJECT_NAME_NOT_FOUND, None)
        # the same FileId with other random bytes
        forged = key[:16] + bytes(8)
        assert client.copy(forged, client.file("f-dst", b""), [(0, 0, 4)])[0] == wire.STATUS_OBJECT_NAME_NOT_FOUND
        # a second session on the first connection
        s2 = client.raw.logon(USER, PASSWORD)
        t2 = client.raw.tree(s2, "rw")
        dst2 = t2.open("stolen2", ALL, wire.FILE_OPEN_IF)
        body = struct.pack("<24sII", key, 1, 0) + struct.pack("<QQII", 0, 0, len(secret), 0)
        r = t2.request(wire.IOCTL, ioctl_body(dst2, FSCTL_SRV_COPYCHUNK_WRITE, body, 12))
        assert r.status == wire.STATUS_OBJECT_NAME_NOT_FOUND
    finally:
        other.close()
    assert (server["root"] / "rw" / "stolen").read_bytes() == b""
    assert (server["root"] / "rw" / "stolen2").read_bytes() == b""
    client.tree().close(src)
    assert client.copy(key, client.file("late", b""), [(0, 0, 4)])[0] == wire.STATUS_OBJECT_NAME_NOT_FOUND


def test_copy_access_checks(client):
    data = pattern(4096)
    client.file("acc-src", data)
    src_read = client.file("acc-src", access=wire.FILE_READ_DATA)
    src_exec = client.file("acc-src", access=wire.FILE_EXECUTE)
    src_attrs = client.file("acc-src", access=FILE_READ_ATTRIBUTES)
    client.file("acc-dst", b"")
    dst_all = client.file("acc-dst")
    dst_no_write = client.file("acc-dst", access=ALL & ~(wire.FILE_WRITE_DATA | wire.FILE_APPEND_DATA))
    dst_no_read = client.file("acc-dst", access=ALL & ~wire.FILE_READ_DATA)
    one = [(0, 0, 4096)]
    assert client.copy(client.resume_key(src_read), dst_all, one)[0] == wire.STATUS_SUCCESS
    assert client.copy(client.resume_key(src_exec), dst_all, one)[0] == wire.STATUS_SUCCESS
    assert client.copy(client.resume_key(src_attrs), dst_all, one)[0] == wire.STATUS_ACCESS_DENIED
    key = client.resume_key(src_read)
    assert client.copy(key, dst_no_write, one)[0] == wire.STATUS_ACCESS_DENIED
    # COPYCHUNK reads the target too (it needs READ_DATA there); COPYCHUNK_WRITE does not
    assert client.copy(key, dst_no_read, one, FSCTL_SRV_COPYCHUNK)[0] == wire.STATUS_ACCESS_DENIED
    assert client.copy(key, dst_no_read, one, FSCTL_SRV_COPYCHUNK_WRITE)[0] == wire.STATUS_SUCCESS


def test_copy_respects_other_opens_locks(client, server):
    data = pattern(4096)
    src = client.file("lk-src", data)
    dst = client.file("lk-dst", b"\0" * 4096)
    key = client.resume_key(src)
    for name in ("lk-src", "lk-dst"):
        locker = client.file(name)
        lock = client.tree().request(wire.LOCK, lock_body(locker, [(0, 4096, EXCLUSIVE | FAIL_IMMEDIATELY)]))
        assert lock.status == wire.STATUS_SUCCESS
        assert client.copy(key, dst, [(0, 0, 4096)]) == (wire.STATUS_FILE_LOCK_CONFLICT, (0, 0, 0))
        client.tree().close(locker)        # (closing releases the lock)
    assert (server["root"] / "rw" / "lk-dst").read_bytes() == bytes(4096)
    assert client.copy(key, dst, [(0, 0, 4096)]) == (wire.STATUS_SUCCESS, (1, 0, 4096))


def test_write_class_controls_are_refused_on_a_read_only_share(client, server):
    (server["root"] / "rw" / "ro-target").write_bytes(pattern(8192))
    src = client.file("ro-src", pattern(8192))
    key = client.resume_key(src)
    dst = client.tree("ro").open("ro-target", wire.GENERIC_READ, wire.FILE_OPEN)
    denied = wire.STATUS_ACCESS_DENIED
    assert client.copy(key, dst, [(0, 0, 4096)], FSCTL_SRV_COPYCHUNK, share="ro")[0] == denied
    assert client.copy(key, dst, [(0, 0, 4096)], share="ro")[0] == denied
    assert client.ioctl(dst, FSCTL_SET_SPARSE, b"\1", share="ro")[0] == denied
    assert client.ioctl(dst, FSCTL_SET_ZERO_DATA, struct.pack("<qq", 0, 8192), share="ro")[0] == denied
    assert client.ioctl(dst, FSCTL_SET_COMPRESSION, b"\0\0", share="ro")[0] == denied
    assert client.ioctl(dst, FSCTL_FILE_LEVEL_TRIM, struct.pack("<IIqq", 0, 1, 0, 8192), share="ro")[0] == denied
    assert client.ioctl(dst, FSCTL_DUPLICATE_EXTENTS_TO_FILE, struct.pack("<16sqqq", src, 0, 0, 4096),
                        share="ro")[0] in (denied, wire.STATUS_FILE_CLOSED)   # (src: another tree)
    assert (server["root"] / "rw" / "ro-target").read_bytes() == pattern(8192)
    # and a handle of a writable share without write access
    reader = client.file("ro-src", access=wire.GENERIC_READ)
    for ctl, data in [(FSCTL_SET_SPARSE, b"\1"), (FSCTL_SET_ZERO_DATA, struct.pack("<qq", 0, 8192)),
                      (FSCTL_SET_COMPRESSION, b"\0\0"),
                      (FSCTL_FILE_LEVEL_TRIM, struct.pack("<IIqq", 0, 1, 0, 8192)),
                      (FSCTL_DUPLICATE_EXTENTS_TO_FILE, struct.pack("<16sqqq", src, 0, 0, 4096))]:
        assert client.ioctl(reader, ctl, data)[0] == denied, hex(ctl)
    assert client.copy(key, reader, [(0, 0, 10)])[0] == denied
    assert (server["root"] / "rw" / "ro-src").read_bytes() == pattern(8192)


def test_smbprotocol_copyfile(server):
    smbclient = pytest.importorskip("smbclient")
    data = os.urandom(3 * 1024 * 1024 + 17)          # four chunks, the last a short one
    (server["root"] / "rw" / "big").write_bytes(data)
    smbclient.register_session("127.0.0.1", username=USER, password=PASSWORD, port=server["port"])
    try:
        smbclient.copyfile(r"\\127.0.0.1\rw\big", r"\\127.0.0.1\rw2\big-copy", port=server["port"])
    finally:
        smbclient.reset_connection_cache()
    assert (server["root"] / "rw2" / "big-copy").read_bytes() == data


def test_samba_smbclient_scopy(server):
    (server["root"] / "rw" / "scopy-src").write_bytes(pattern(200000))
    result = subprocess.run(["smbclient", "//127.0.0.1/rw", "-p", str(server["port"]), "-U",
                             f"{USER}%{PASSWORD}", "-c", "scopy scopy-src scopy-dst"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (server["root"] / "rw" / "scopy-dst").read_bytes() == pattern(200000)


def test_impacket_copychunk(server):
    """impacket's SMBConnection offers no copy; its SMB3 layer sends the IOCTLs."""
    smbconnection = pytest.importorskip("impacket.smbconnection")
    from impacket import smb3structs as s3
    data = pattern(100000, seed=3)
    (server["root"] / "rw" / "imp-src").write_bytes(data)
    conn = smbconnection.SMBConnection("127.0.0.1", "127.0.0.1", sess_port=server["port"],
                                       preferredDialect=s3.SMB2_DIALECT_30)
    try:
        conn.login(USER, PASSWORD)
        tid = conn.connectTree("rw")
        src = conn.openFile(tid, "imp-src", desiredAccess=s3.FILE_READ_DATA)
        dst = conn.createFile(tid, "imp-dst", desiredAccess=s3.FILE_READ_DATA | s3.FILE_WRITE_DATA)
        smb3 = conn.getSMBServer()
        key = smb3.ioctl(tid, src, s3.FSCTL_SRV_REQUEST_RESUME_KEY, s3.SMB2_0_IOCTL_IS_FSCTL,
                         maxInputResponse=0, maxOutputResponse=32)[:24]
        request = struct.pack("<24sII", key, 2, 0) + struct.pack("<QQII", 0, 0, 65536, 0) + \
            struct.pack("<QQII", 65536, 65536, len(data) - 65536, 0)
        answer = smb3.ioctl(tid, dst, s3.FSCTL_SRV_COPYCHUNK, s3.SMB2_0_IOCTL_IS_FSCTL, request,
                            maxInputResponse=0, maxOutputResponse=12)
        assert struct.unpack("<III", answer) == (2, 0, len(data))
        conn.closeFile(tid, src)
        conn.closeFile(tid, dst)
    finally:
        conn.close()
    assert (server["root"] / "rw" / "imp-dst").read_bytes() == data


# -- sparse files, zeroing, allocated ranges ------------------------------------------------

def attributes(client, fid: bytes) -> int:
    r = client.tree().request(wire.QUERY_INFO, struct.pack("<HBBIHHIII16s", 41, 1, 4, 40, 0, 0, 0, 0, 0, fid))
    assert r.status == wire.STATUS_SUCCESS
    return struct.unpack_from("<I", r.buffer(2, "<HI"), 32)[0]


def ranges(client, fid: bytes, offset: int, length: int, max_out: int = 1024):
    status, out = client.ioctl(fid, FSCTL_QUERY_ALLOCATED_RANGES, struct.pack("<qq", offset, length), max_out)
    return status, [struct.unpack_from("<qq", out, i) for i in range(0, len(out), 16)]


def test_sparse_flag_holes_and_allocated_ranges(client, server):
    chunk = 64 * 1024
    fid = client.file("sparse", pattern(4 * chunk))
    ok = wire.STATUS_SUCCESS
    assert not attributes(client, fid) & ATTR_SPARSE_FILE
    # not sparse: all of the file is allocated, as NTFS says, and zeroing keeps it so
    assert ranges(client, fid, 1, 10 * chunk) == (ok, [(1, 4 * chunk - 1)])
    assert client.ioctl(fid, FSCTL_SET_ZERO_DATA, struct.pack("<qq", 0, chunk))[0] == ok
    assert ranges(client, fid, 0, 4 * chunk) == (ok, [(0, 4 * chunk)])
    assert client.ioctl(fid, FSCTL_SET_SPARSE)[0] == ok                  # no buffer: set
    assert attributes(client, fid) & ATTR_SPARSE_FILE
    # sparse: zeroing punches holes, which the ranges leave out
    for start in (0, 2 * chunk):
        assert client.ioctl(fid, FSCTL_SET_ZERO_DATA, struct.pack("<qq", start, start + chunk))[0] == ok
    path = server["root"] / "rw" / "sparse"
    assert path.stat().st_size == 4 * chunk
    assert path.read_bytes() == bytes(chunk) + pattern(4 * chunk)[chunk:2 * chunk] + bytes(chunk) + \
        pattern(4 * chunk)[3 * chunk:]
    assert ranges(client, fid, 0, 4 * chunk) == (ok, [(chunk, chunk), (3 * chunk, chunk)])
    # only one fits: the first and BUFFER_OVERFLOW; none fits: BUFFER_TOO_SMALL
    assert ranges(client, fid, 0, 4 * chunk, max_out=16) == (wire.STATUS_BUFFER_OVERFLOW, [(chunk, chunk)])
    assert ranges(client, fid, 0, 4 * chunk, max_out=15)[0] == wire.STATUS_BUFFER_TOO_SMALL
    # past the end of file: nothing, and zeroing there changes no size
    assert ranges(client, fid, 4 * chunk, 100) == (ok, [])
    assert client.ioctl(fid, FSCTL_SET_ZERO_DATA, struct.pack("<qq", 8 * chunk, 9 * chunk))[0] == ok
    assert path.stat().st_size == 4 * chunk
    # cleared: the flag is gone, and the file counts as allocated throughout again
    assert client.ioctl(fid, FSCTL_SET_SPARSE, b"\0")[0] == ok
    assert not attributes(client, fid) & ATTR_SPARSE_FILE
    assert ranges(client, fid, 0, 4 * chunk) == (ok, [(0, 4 * chunk)])


def test_sparse_controls_check_their_input_and_access(client):
    fid = client.file("sparse-bad", pattern(8192))
    bad = wire.STATUS_INVALID_PARAMETER
    assert ranges(client, fid, 512, -1)[0] == bad                          # negative length
    assert ranges(client, fid, (1 << 63) - 10, 100)[0] == bad              # wraps past 2^63
    assert client.ioctl(fid, FSCTL_QUERY_ALLOCATED_RANGES, b"\0" * 15)[0] == bad
    assert client.ioctl(fid, FSCTL_SET_ZERO_DATA, struct.pack("<qq", 4096, 4095))[0] == bad
    assert client.ioctl(fid, FSCTL_SET_ZERO_DATA, struct.pack("<qq", -1, 10))[0] == bad
    assert client.ioctl(fid, FSCTL_SET_ZERO_DATA, b"")[0] == bad
    # rights: QAR needs READ_DATA, ZERO_DATA WRITE_DATA, SET_SPARSE some write access
    attrs_only = client.file("sparse-bad", access=FILE_READ_ATTRIBUTES | wire.FILE_WRITE_ATTRIBUTES)
    append_only = client.file("sparse-bad", access=wire.FILE_APPEND_DATA)
    ea_only = client.file("sparse-bad", access=wire.FILE_WRITE_EA)
    denied = wire.STATUS_ACCESS_DENIED
    assert ranges(client, attrs_only, 0, 10)[0] == denied
    assert client.ioctl(append_only, FSCTL_SET_ZERO_DATA, struct.pack("<qq", 0, 10))[0] == denied
    assert client.ioctl(attrs_only, FSCTL_SET_SPARSE, b"\1")[0] == wire.STATUS_SUCCESS
    assert client.ioctl(ea_only, FSCTL_SET_SPARSE, b"\1")[0] == denied
    # a directory is not sparse
    d = client.tree().open("sparse-dir", ALL, wire.FILE_OPEN_IF, wire.FILE_DIRECTORY_FILE)
    assert client.ioctl(d, FSCTL_SET_SPARSE, b"\1")[0] == bad
    # another open's lock in the way of zeroing
    locker = client.file("sparse-bad")
    assert client.tree().request(wire.LOCK, lock_body(locker, [(0, 100, EXCLUSIVE | FAIL_IMMEDIATELY)])).status == 0
    assert client.ioctl(fid, FSCTL_SET_ZERO_DATA, struct.pack("<qq", 0, 10))[0] == wire.STATUS_FILE_LOCK_CONFLICT


def test_compression_reparse_trim_and_duplicate_extents(client, server):
    fid = client.file("misc", pattern(65536))
    ok = wire.STATUS_SUCCESS
    assert client.ioctl(fid, FSCTL_GET_COMPRESSION, max_out=2) == (ok, b"\0\0")
    assert client.ioctl(fid, FSCTL_SET_COMPRESSION, b"\0\0")[0] == ok
    assert client.ioctl(fid, FSCTL_SET_COMPRESSION, b"\2\0")[0] == wire.STATUS_NOT_SUPPORTED
    assert client.ioctl(fid, FSCTL_SET_COMPRESSION, b"\x42\0")[0] == wire.STATUS_INVALID_PARAMETER
    assert client.ioctl(fid, FSCTL_SET_COMPRESSION, b"")[0] == wire.STATUS_INVALID_PARAMETER
    assert client.ioctl(fid, FSCTL_GET_REPARSE_POINT)[0] == STATUS_NOT_A_REPARSE_POINT
    # trim: a count the buffer does not hold, none, or no room for the answer is refused
    for count, max_out in ((0xFFFFFFFF, 4), (0, 4), (1, 3)):
        assert client.ioctl(fid, FSCTL_FILE_LEVEL_TRIM, struct.pack("<IIqq", 0, count, 0, 4096),
                            max_out=max_out)[0] == wire.STATUS_INVALID_PARAMETER
    assert (server["root"] / "rw" / "misc").read_bytes() == pattern(65536)
    # duplicate extents: a reflink where the file system has them, else NOT_SUPPORTED
    dst = client.file("misc-dst", bytes(65536))
    request = struct.pack("<16sqqq", fid, 0, 0, 65536)
    status, _ = client.ioctl(dst, FSCTL_DUPLICATE_EXTENTS_TO_FILE, request)
    assert status in (ok, wire.STATUS_NOT_SUPPORTED)
    assert (server["root"] / "rw" / "misc-dst").read_bytes() == (pattern(65536) if status == ok else bytes(65536))
    # beyond either file's end: NOT_SUPPORTED, sizes unchanged; a closed source: FILE_CLOSED
    too_long = struct.pack("<16sqqq", fid, 0, 0, 65536 * 2)
    assert client.ioctl(dst, FSCTL_DUPLICATE_EXTENTS_TO_FILE, too_long)[0] == wire.STATUS_NOT_SUPPORTED
    assert (server["root"] / "rw" / "misc-dst").stat().st_size == 65536
    closed = struct.pack("<16sqqq", b"\x77" * 16, 0, 0, 4096)
    assert client.ioctl(dst, FSCTL_DUPLICATE_EXTENTS_TO_FILE, closed)[0] == wire.STATUS_FILE_CLOSED


def test_trim_releases_whole_pages_and_keeps_the_rest(client, server):
    """FSCTL_FILE_LEVEL_TRIM (MS-FSA 2.1.5.10.6): the storage of the whole pages inside each
    range is released, the data there undefined (zeros here); a range holding no whole page
    and the bytes around the pages keep their data; the size never changes. A file that is not
    sparse stays allocated throughout (as on NTFS), a sparse one keeps a hole."""
    ok = wire.STATUS_SUCCESS
    data = pattern(8 * 4096)
    path = server["root"] / "rw" / "trim"
    fid = client.file("trim", data)
    asked = [(100, 4096), (4096 + 10, 2 * 4096), (6 * 4096, 1 << 40)]   # pages 2 and 6-7
    request = struct.pack("<II", 0, len(asked)) + b"".join(struct.pack("<qq", *r) for r in asked)
    assert client.ioctl(fid, FSCTL_FILE_LEVEL_TRIM, request, max_out=4) == (ok, struct.pack("<I", 3))
    after = path.read_bytes()
    zeros = bytes(4096)
    assert after == data[:2 * 4096] + zeros + data[3 * 4096:6 * 4096] + zeros * 2
    assert path.stat().st_blocks * 512 >= len(data)      # still allocated
    assert ranges(client, fid, 0, 1 << 40) == (ok, [(0, len(data))])
    sparse = client.file("trim-sparse", data)
    assert client.ioctl(sparse, FSCTL_SET_SPARSE, b"\1")[0] == ok
    request = struct.pack("<IIqq", 0, 1, 4096, 4096)
    assert client.ioctl(sparse, FSCTL_FILE_LEVEL_TRIM, request) == (ok, struct.pack("<I", 1))
    assert ranges(client, sparse, 0, 1 << 40) == (ok, [(0, 4096), (2 * 4096, 6 * 4096)])
    assert (server["root"] / "rw" / "trim-sparse").read_bytes() == data[:4096] + zeros + data[2 * 4096:]


def test_network_interface_info_is_about_the_server_not_a_file(client):
    assert client.ioctl(FID_ANY, FSCTL_QUERY_NETWORK_INTERFACE_INFO)[0] == wire.STATUS_SUCCESS
    assert client.ioctl(FID_ANY, FSCTL_QUERY_NETWORK_INTERFACE_INFO, max_out=1)[0] == wire.STATUS_BUFFER_TOO_SMALL
    fid = client.file("nii", b"")
    for max_out in (65536, 1):
        assert client.ioctl(fid, FSCTL_QUERY_NETWORK_INTERFACE_INFO, max_out=max_out)[0] == \
            wire.STATUS_INVALID_PARAMETER


def test_previous_versions_are_enumerated_as_none(client):
    """FSCTL_SRV_ENUMERATE_SNAPSHOTS (Explorer's Previous Versions tab, smbtorture's
    smb2.ioctl.shadow_copy): success with a SRV_SNAPSHOT_ARRAY of no snapshots (an empty
    MULTI_SZ), on a file and on a directory, in 16 bytes (as smbd: Samba's client takes fewer
    for a malformed answer); under 16 bytes to answer in: INVALID_PARAMETER. (A share's
    snapshots: tests/server/test_shadow_copy.py.)"""
    fid = client.file("snaps", b"x")
    d = client.tree().open("snaps-dir", ALL, wire.FILE_OPEN_IF, wire.FILE_DIRECTORY_FILE)
    none = struct.pack("<IIIHH", 0, 0, 2, 0, 0)
    assert client.ioctl(fid, FSCTL_SRV_ENUMERATE_SNAPSHOTS, max_out=16) == (wire.STATUS_SUCCESS, none)
    assert client.ioctl(d, FSCTL_SRV_ENUMERATE_SNAPSHOTS) == (wire.STATUS_SUCCESS, none)
    assert client.ioctl(fid, FSCTL_SRV_ENUMERATE_SNAPSHOTS, max_out=15)[0] == wire.STATUS_INVALID_PARAMETER


def test_server_log_is_clean(server):
    """Run last in the module: nothing the tests sent was a server bug."""
    text = server["log"].read_text()
    assert "Traceback" not in text and "ERROR" not in text.replace("no control socket", ""), text[-3000:]
