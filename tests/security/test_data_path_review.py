"""Adversarial review of the data path (READ, WRITE, FLUSH, LOCK) with raw packets against a
real `smbring serve` (tests/smb/test_read_write.py and test_lock.py have the core's rules one
by one; test_ioctl_rpc_review.py the IOCTLs). What is tried here, and what the server answers:

1. An open granted FILE_APPEND_DATA without FILE_WRITE_DATA writing at offset 0, at 2^63 and at
   0xFFFFFFFFFFFFFFFF: its data goes to the end of the file, never over what is there (as
   Windows' NtWriteFile places it); appends of two connections at once all land, none over
   another; another open's lock at the end is a conflict. A writer's 0xFFFFFFFFFFFFFFFF
   stays INVALID_PARAMETER (as smbd answers).
2. A WRITE whose DataOffset points into the header or its own fixed part: INVALID_PARAMETER
   (smbd alike), nothing written.
3. FLUSH through an open without write access (READ_DATA, READ_ATTRIBUTES, a directory opened
   to list it): ACCESS_DENIED, as smbd; an append-only open and a directory opened with
   ADD_FILE may.
4. LOCK on a directory: INVALID_DEVICE_REQUEST (smbd's); through an open of the attributes
   only: ACCESS_DENIED, so that such an open cannot hold an exclusive lock that stops the
   file's readers and writers.
5. Blocking locks left waiting on several opens, then LOGOFF or TREE_DISCONNECT: each is
   answered, and the lock holder's unlock afterwards finds nothing stale.
6. IOCTL Flags other than exactly SMB2_0_IOCTL_IS_FSCTL: NOT_SUPPORTED (MS-SMB2 3.3.5.15).
7. A compound whose CREATE fails, then related READ, WRITE, LOCK, FLUSH and IOCTL on FileId
   0xFFFF...: each answered with the CREATE's failure, nothing touched.
8. A WRITE acknowledged, then a FLUSH: the file's descriptor is fsync'ed before the FLUSH is
   answered (seen with strace, on a share whose I/O goes through system calls).
"""
from __future__ import annotations

import os
import shutil
import struct
import subprocess
import time

import pytest
from raw import FID_ANY, RawClient
from servers import PASSWORD, USER, free_port, spawn, stop
from smbcore import create_body, flush_body, ioctl_body, lock_body, read_body, write_body

from smbring.smb import wire

READ_ATTRIBUTES = 0x80
ADD_FILE = 0x2
DIRECTORY = 0x1                 # FILE_DIRECTORY_FILE
EXCLUSIVE, FAIL_IMMEDIATELY, UNLOCK = 0x2, 0x10, 0x4
FSCTL_CREATE_OR_GET_OBJECT_ID = 0x000900C0
ORIGINAL = b"0123456789"


def session(servers, name: str = "f", data: bytes = ORIGINAL):
    srv = servers()
    (srv.path("rw") / name).write_bytes(data)
    c, s = srv.logon()
    return srv, c, c.tree(s, "rw")


def written(r) -> int:
    assert r.status == wire.STATUS_SUCCESS, r
    return struct.unpack_from("<I", r.body, 4)[0]


# -- 1. append-only opens ------------------------------------------------------------------------

def test_an_append_only_open_adds_to_the_end_and_never_overwrites(servers):
    srv, c, t = session(servers)
    path = srv.path("rw") / "f"
    append = t.open("f", wire.FILE_APPEND_DATA)
    assert written(t.request(wire.WRITE, write_body(append, b"AA", 0))) == 2
    assert path.read_bytes() == ORIGINAL + b"AA"
    assert written(t.request(wire.WRITE, write_body(append, b"BB", 2 ** 63))) == 2
    assert written(t.request(wire.WRITE, write_body(append, b"CC", 2 ** 64 - 1))) == 2
    assert path.read_bytes() == ORIGINAL + b"AABBCC"
    # a writer's 0xFFFFFFFFFFFFFFFF is no offset (smbd: INVALID_PARAMETER)
    writer = t.open("f", wire.FILE_WRITE_DATA)
    assert t.request(wire.WRITE, write_body(writer, b"DD", 2 ** 64 - 1)).status == wire.STATUS_INVALID_PARAMETER
    # another open's lock over the end: the append would write there
    assert t.request(wire.LOCK, lock_body(writer, [(16, 100, EXCLUSIVE | FAIL_IMMEDIATELY)])).status == 0
    assert t.request(wire.WRITE, write_body(append, b"EE", 0)).status == wire.STATUS_FILE_LOCK_CONFLICT
    assert path.read_bytes() == ORIGINAL + b"AABBCC"


def test_appends_of_two_connections_at_once_all_land(servers):
    """Each connection sends its appends without waiting for answers: every block lands
    whole, at its own place after the original bytes."""
    srv, a, ta = session(servers)
    b, sb = srv.logon()
    tb = b.tree(sb, "rw")
    fa, fb = ta.open("f", wire.FILE_APPEND_DATA), tb.open("f", wire.FILE_APPEND_DATA)
    block = 4096
    sent = {}
    for i in range(16):
        for client, tree, fid, mark in ((a, ta, fa, b"a"), (b, tb, fb, b"b")):
            data = mark + bytes([i]) * (block - 1)
            m = tree.message(wire.WRITE, write_body(fid, data), payload=block)
            client.send([m])
            sent[data] = (client, wire.Header.parse(m).message_id)
    for client, mid in sent.values():
        assert written(client.response_to(mid)) == block
    content = (srv.path("rw") / "f").read_bytes()
    assert content[:len(ORIGINAL)] == ORIGINAL and len(content) == len(ORIGINAL) + block * len(sent)
    blocks = {content[i:i + block] for i in range(len(ORIGINAL), len(content), block)}
    assert blocks == set(sent)


# -- 2. WRITE's DataOffset ------------------------------------------------------------------------

def test_write_data_inside_the_header_or_the_fixed_part_is_refused(servers):
    srv, c, t = session(servers)
    fid = t.open("f", wire.GENERIC_READ | wire.GENERIC_WRITE)
    for data_offset in (0, 64, 64 + 47):
        body = bytearray(write_body(fid, b"abc"))
        struct.pack_into("<H", body, 2, data_offset)
        assert t.request(wire.WRITE, bytes(body)).status == wire.STATUS_INVALID_PARAMETER
    assert (srv.path("rw") / "f").read_bytes() == ORIGINAL
    assert written(t.request(wire.WRITE, write_body(fid, b"abc"))) == 3


# -- 3. FLUSH ------------------------------------------------------------------------------------

def test_flush_needs_write_access(servers):
    srv, c, t = session(servers)
    (srv.path("rw") / "d").mkdir()
    for access in (wire.FILE_READ_DATA, READ_ATTRIBUTES, wire.GENERIC_READ):
        assert t.request(wire.FLUSH, flush_body(t.open("f", access))).status == wire.STATUS_ACCESS_DENIED
    assert t.request(wire.FLUSH, flush_body(t.open("d", READ_ATTRIBUTES, options=DIRECTORY))).status == \
        wire.STATUS_ACCESS_DENIED
    for fid in (t.open("f", wire.FILE_APPEND_DATA), t.open("f", wire.GENERIC_WRITE),
                t.open("d", READ_ATTRIBUTES | ADD_FILE, options=DIRECTORY)):
        assert t.request(wire.FLUSH, flush_body(fid)).status == wire.STATUS_SUCCESS


# -- 4. LOCK ---------------------------------------------------------------------------------------

def test_an_open_of_the_attributes_only_cannot_lock_out_the_files_readers(servers):
    srv, c, t = session(servers)
    owner = t.open("f", wire.GENERIC_READ | wire.GENERIC_WRITE)
    peek = t.open("f", READ_ATTRIBUTES)
    r = t.request(wire.LOCK, lock_body(peek, [(0, 2 ** 63, EXCLUSIVE | FAIL_IMMEDIATELY)]))
    assert r.status == wire.STATUS_ACCESS_DENIED
    assert t.request(wire.READ, read_body(owner, 4)).status == wire.STATUS_SUCCESS
    assert written(t.request(wire.WRITE, write_body(owner, b"xy", 2))) == 2
    # an open of the data may (its unlock too)
    for access in (wire.FILE_READ_DATA, wire.FILE_WRITE_DATA, wire.FILE_APPEND_DATA):
        fid = t.open("f", access)
        assert t.request(wire.LOCK, lock_body(fid, [(100, 1, EXCLUSIVE | FAIL_IMMEDIATELY)])).status == 0
        assert t.request(wire.LOCK, lock_body(fid, [(100, 1, UNLOCK)])).status == 0


def test_a_directory_has_no_byte_ranges_to_lock(servers):
    srv, c, t = session(servers)
    (srv.path("rw") / "d").mkdir()
    d = t.open("d", wire.GENERIC_READ, options=DIRECTORY)
    for flags in (EXCLUSIVE | FAIL_IMMEDIATELY, UNLOCK):
        assert t.request(wire.LOCK, lock_body(d, [(0, 1, flags)])).status == wire.STATUS_INVALID_DEVICE_REQUEST


def test_blocking_locks_left_waiting_end_with_their_session_or_tree(servers):
    srv, a, ta = session(servers)
    holder = ta.open("f", wire.GENERIC_READ | wire.GENERIC_WRITE)
    assert ta.request(wire.LOCK, lock_body(holder, [(0, 10, EXCLUSIVE | FAIL_IMMEDIATELY)])).status == 0
    b, sb = srv.logon()
    for end in ("logoff", "tree disconnect"):
        sb = sb if end == "logoff" else b.logon(srv.user, srv.password)
        tb = b.tree(sb, "rw")
        waiting = []
        for _ in range(5):
            m = tb.message(wire.LOCK, lock_body(tb.open("f", wire.GENERIC_READ), [(0, 10, EXCLUSIVE)]))
            b.send([m])
            waiting.append(wire.Header.parse(m).message_id)
            assert b.response_to(waiting[-1]).status == wire.STATUS_PENDING
        if end == "logoff":
            assert b.logoff(sb).status == wire.STATUS_SUCCESS
        else:
            assert tb.request(wire.TREE_DISCONNECT, struct.pack("<HH", 4, 0)).status == wire.STATUS_SUCCESS
        assert [b.response_to(mid).status for mid in waiting] == [wire.STATUS_RANGE_NOT_LOCKED] * 5
    assert ta.request(wire.LOCK, lock_body(holder, [(0, 10, UNLOCK)])).status == wire.STATUS_SUCCESS
    assert b.echo().status == wire.STATUS_SUCCESS and srv.alive()


# -- 6. IOCTL Flags --------------------------------------------------------------------------------

def test_ioctl_flags_other_than_is_fsctl_are_not_supported(servers):
    srv, c, t = session(servers)
    fid = t.open("f", wire.GENERIC_READ)
    for flags, status in ((0, wire.STATUS_NOT_SUPPORTED), (3, wire.STATUS_NOT_SUPPORTED),
                          (0x80000001, wire.STATUS_NOT_SUPPORTED), (1, wire.STATUS_SUCCESS)):
        body = bytearray(ioctl_body(fid, FSCTL_CREATE_OR_GET_OBJECT_ID, b"", 64))
        struct.pack_into("<I", body, 48, flags)
        assert t.request(wire.IOCTL, bytes(body)).status == status, flags


# -- 7. related requests after a failed CREATE ----------------------------------------------------

def test_related_requests_after_a_failed_create_touch_nothing(servers):
    srv, c, t = session(servers)
    t.open("f", wire.GENERIC_READ | wire.GENERIC_WRITE)      # an open the chain could fall back on
    related = [(wire.READ, read_body(FID_ANY, 4)), (wire.WRITE, write_body(FID_ANY, b"xx")),
               (wire.LOCK, lock_body(FID_ANY, [(0, 1, EXCLUSIVE | FAIL_IMMEDIATELY)])),
               (wire.FLUSH, flush_body(FID_ANY)),
               (wire.IOCTL, ioctl_body(FID_ANY, FSCTL_CREATE_OR_GET_OBJECT_ID, b"", 64))]
    chain = [t.message(wire.CREATE, create_body("missing", wire.GENERIC_ALL, wire.FILE_OPEN, 0))] + \
        [t.message(command, body, flags=wire.FLAGS_RELATED) for command, body in related]
    assert [r.status for r in c.compound(chain)] == [wire.STATUS_OBJECT_NAME_NOT_FOUND] * 6
    assert (srv.path("rw") / "f").read_bytes() == ORIGINAL
    assert not (srv.path("rw") / "missing").exists()


# -- 8. FLUSH reaches the disk ---------------------------------------------------------------------

@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("strace"), reason="strace as root")
def test_an_acknowledged_write_is_fsynced_before_the_flush_is_answered(tmp_path):
    share = tmp_path / "sync"
    share.mkdir()
    port = free_port()
    conf = tmp_path / "smb.conf"
    # threadpool: the file I/O is made with system calls (io_uring's fsync is no syscall)
    conf.write_text(f"[global]\nlisten = 127.0.0.1:{port}\n"
                    f"[sync]\npath = {share}\nread only = no\nvfs objects = threadpool\n")
    proc, port, _log = spawn(tmp_path, "--config", str(conf), port=port)
    tracer = c = None
    try:
        c = RawClient(port)
        assert c.negotiate((wire.SMB311,)).status == wire.STATUS_SUCCESS
        t = c.tree(c.logon(USER, PASSWORD), "sync")
        fid = t.open("f", wire.GENERIC_READ | wire.GENERIC_WRITE, wire.FILE_CREATE)
        trace = tmp_path / "strace.out"
        threads = [f"-p{tid}" for tid in os.listdir(f"/proc/{proc.pid}/task")]
        tracer = subprocess.Popen(["strace", "-f", "-e", "trace=pwrite64,fsync", "-o", str(trace), *threads],
                                  stderr=subprocess.PIPE, text=True)
        for _ in threads:       # "Process N attached", one line for each
            assert "attached" in tracer.stderr.readline()
        marker = b"durable-" + os.urandom(8).hex().encode()
        assert written(t.request(wire.WRITE, write_body(fid, marker))) == len(marker)
        assert t.request(wire.FLUSH, flush_body(fid)).status == wire.STATUS_SUCCESS
        time.sleep(0.2)         # (strace writes what it saw a moment later)
        tracer.terminate()
        tracer.wait(10)
        calls = [line.split(None, 1)[1] for line in trace.read_text().splitlines() if " " in line]
        wrote = [i for i, call in enumerate(calls) if call.startswith("pwrite64(") and marker.decode() in call]
        assert wrote, calls
        fd = calls[wrote[0]][len("pwrite64("):].split(",", 1)[0]
        assert any(call.startswith(f"fsync({fd})") for call in calls[wrote[0]:]), calls
    finally:
        if tracer is not None and tracer.poll() is None:
            tracer.kill()
            tracer.wait()
        if c is not None:
            c.close()
        stop(proc)
