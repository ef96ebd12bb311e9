"""`smbring serve --workers 2`: real smbprotocol clients on two different worker processes
see each other's share modes, delete-pending files and byte-range locks; a worker killed in
the middle of a transfer is replaced, its share modes and locks go, and the other worker's
transfer completes byte-exact; SIGTERM stops everything; durable handles and multichannel
are offered (each client's connections on one worker: test_workers_handoff). (Oplocks and
leases: test_workers_leases.)

Which worker serves a connection is whichever takes it first from the listening socket they
share: a test opens a probe file on each connection and asks `smbring status` which worker
holds it; to put a second client on the other worker it stops the first one's worker while
that client connects."""
import fcntl
import hashlib
import os
import signal
import struct
import json
import subprocess
import sys
import threading
import time
import uuid

import pytest

pytest.importorskip("smbprotocol")

from smbprotocol.change_notify import CompletionFilter, FileSystemWatcher  # noqa: E402
from smbprotocol.connection import Capabilities, Connection  # noqa: E402
from smbprotocol.create_contexts import (CreateContextName, SMB2CreateContextRequest,  # noqa: E402
                                         SMB2CreateDurableHandleRequest,
                                         SMB2CreateDurableHandleResponse)
from smbprotocol.exceptions import SMBResponseException  # noqa: E402
from smbprotocol.file_info import FileDispositionInformation, FileInformationClass, InfoType  # noqa: E402
from smbprotocol.open import (CreateDisposition, CreateOptions, FileAttributes,  # noqa: E402
                              ImpersonationLevel, LockFlags, Open, RequestedOplockLevel,
                              ShareAccess, SMB2LockElement, SMB2QueryInfoRequest,
                              SMB2QueryInfoResponse, SMB2SetInfoRequest)
from smbprotocol.session import Session  # noqa: E402
from smbprotocol.tree import TreeConnect  # noqa: E402

from smbring.smb.locks import Lock  # noqa: E402

from servers import PASSWORD, USER, spawn, stop  # noqa: E402
from worker_servers import status_of, wait_for_workers, worker_holding  # noqa: E402
from worker_servers import start as start_workers  # noqa: E402

ALL_SHARE = ShareAccess.FILE_SHARE_READ | ShareAccess.FILE_SHARE_WRITE | ShareAccess.FILE_SHARE_DELETE
ALL_ACCESS = 0x001F01FF
SHARING_VIOLATION, DELETE_PENDING = 0xC0000043, 0xC0000056
LOCK_NOT_GRANTED, FILE_LOCK_CONFLICT = 0xC0000055, 0xC0000054
EXCLUSIVE_NOW = LockFlags.SMB2_LOCKFLAG_EXCLUSIVE_LOCK | LockFlags.SMB2_LOCKFLAG_FAIL_IMMEDIATELY
SHARED_NOW = LockFlags.SMB2_LOCKFLAG_SHARED_LOCK | LockFlags.SMB2_LOCKFLAG_FAIL_IMMEDIATELY


class Client:
    def __init__(self, port: int):
        self.conn = Connection(uuid.uuid4(), "127.0.0.1", port)
        self.conn.connect()
        self.session = Session(self.conn, USER, PASSWORD, require_encryption=False)
        self.session.connect()
        self.tree = TreeConnect(self.session, r"\\127.0.0.1\share")
        self.tree.connect()

    def open(self, name: str, share=ALL_SHARE, options=0, disposition=CreateDisposition.FILE_OPEN_IF,
             oplock=RequestedOplockLevel.SMB2_OPLOCK_LEVEL_NONE, contexts=None, directory=False):
        o = Open(self.tree, name)
        o.answers = o.create(
            ImpersonationLevel.Impersonation, ALL_ACCESS,
            FileAttributes.FILE_ATTRIBUTE_DIRECTORY if directory else FileAttributes.FILE_ATTRIBUTE_NORMAL,
            share, disposition,
            options | (CreateOptions.FILE_DIRECTORY_FILE if directory
                       else CreateOptions.FILE_NON_DIRECTORY_FILE),
            oplock_level=oplock, create_contexts=contexts)
        return o

    def close(self):
        try:
            self.conn.disconnect(True)
        except Exception:        # its worker was killed
            pass


def element(offset: int, length: int, flags: int) -> SMB2LockElement:
    e = SMB2LockElement()
    e["offset"], e["length"], e["flags"] = offset, length, flags
    return e


@pytest.fixture
def server(tmp_path):
    server = start_workers(tmp_path)
    yield server
    stop(server["proc"])


@pytest.fixture
def pair(server):
    """Two clients on different workers, each with its probe file open: (a, b, a's worker,
    b's worker). While b connects, a's worker is stopped (SIGSTOP): it cannot take the
    connection from the shared listening socket, so the other worker does."""
    a = Client(server["port"])
    a.open("probe-a")
    wa = worker_holding(server, "probe-a")
    pid = next(w["pid"] for w in status_of(server)["workers"] if w["worker"] == wa)
    os.kill(pid, signal.SIGSTOP)
    try:
        b = Client(server["port"])
    finally:
        os.kill(pid, signal.SIGCONT)
    b.open("probe-b")
    wb = worker_holding(server, "probe-b")
    assert {wa, wb} == {1, 2}
    yield a, b, wa, wb
    a.close()
    b.close()


def status_code(excinfo) -> int:
    return excinfo.value.status


# -- share modes and delete pending -------------------------------------------------------------
def test_share_modes_across_workers(pair):
    a, b, _wa, _wb = pair
    held = a.open("exclusive.txt", share=0)
    with pytest.raises(SMBResponseException) as e:
        b.open("exclusive.txt")
    assert status_code(e) == SHARING_VIOLATION
    with pytest.raises(SMBResponseException) as e:       # also one that only reads
        b.open("exclusive.txt", share=ShareAccess.FILE_SHARE_READ)
    assert status_code(e) == SHARING_VIOLATION
    held.close()
    b.open("exclusive.txt").close()                       # released: allowed now
    # the other way round: b shares only reading; a may not open to write
    reader = b.open("readers.txt", share=ShareAccess.FILE_SHARE_READ)
    with pytest.raises(SMBResponseException) as e:
        a.open("readers.txt")
    assert status_code(e) == SHARING_VIOLATION
    reader.close()


def test_delete_on_close_across_workers(pair, server):
    a, b, _wa, _wb = pair
    doomed = a.open("doomed.txt", options=CreateOptions.FILE_DELETE_ON_CLOSE)
    kept = b.open("doomed.txt")
    doomed.close()                                      # pending: b still has it open
    assert (server["share"] / "doomed.txt").exists()
    for client in (a, b):                               # every worker refuses new opens
        with pytest.raises(SMBResponseException) as e:
            client.open("doomed.txt")
        assert status_code(e) == DELETE_PENDING
    kept.close()                                        # the last close, on the other worker
    assert not (server["share"] / "doomed.txt").exists()
    b.open("doomed.txt").close()                         # a new file of that name


def test_delete_on_close_removes_the_name_it_was_asked_through(pair, server):
    """Two names of one file (hard links): an open through one name asks for delete on
    close and closes while an open of the other name, on the other worker, keeps the file;
    when that one closes, the name the delete was asked through goes, the other stays."""
    a, b, _wa, _wb = pair
    share = server["share"]
    (share / "victim.txt").write_bytes(b"precious")
    os.link(share / "victim.txt", share / "link.txt")
    kept = a.open("victim.txt", disposition=CreateDisposition.FILE_OPEN)
    doomed = b.open("link.txt", options=CreateOptions.FILE_DELETE_ON_CLOSE,
                    disposition=CreateDisposition.FILE_OPEN)
    doomed.close()                                      # pending: a still has the file open
    kept.close()                                        # the last close, on the other worker
    assert not (share / "link.txt").exists()
    assert (share / "victim.txt").read_bytes() == b"precious"


@pytest.mark.parametrize("replacement", ["another file", "a symlink to another file"])
def test_delete_on_close_leaves_a_name_that_now_names_another_file(pair, server, replacement):
    """The name the delete was asked through was replaced by another file, or by a symlink
    to one, before the last close (on the other worker): nothing is deleted."""
    a, b, _wa, _wb = pair
    share = server["share"]
    (share / "victim.txt").write_bytes(b"precious")
    os.link(share / "victim.txt", share / "link.txt")
    kept = a.open("victim.txt", disposition=CreateDisposition.FILE_OPEN)
    doomed = b.open("link.txt", options=CreateOptions.FILE_DELETE_ON_CLOSE,
                    disposition=CreateDisposition.FILE_OPEN)
    doomed.close()
    (share / "other.txt").write_bytes(b"other")
    if replacement == "another file":
        os.replace(share / "other.txt", share / "link.txt")  # the name now names another file
    else:
        os.symlink("other.txt", share / "planted")
        os.replace(share / "planted", share / "link.txt")
    kept.close()
    assert (share / "link.txt").read_bytes() == b"other"      # (through the link, if one)
    assert (share / "victim.txt").read_bytes() == b"precious"


@pytest.mark.parametrize("last_close", ["the asking open", "another worker's open"])
def test_delete_on_close_through_a_symlink_removes_that_name(pair, server, last_close):
    """A file opened through a symlink inside the share (which is followed) and deleted on
    close: the name it was asked through goes, the symlink, never the file it leads to; the
    same whether the open that asked closes the file last or another worker's open does
    (which used to leave the name: it refused any symlink)."""
    a, b, _wa, _wb = pair
    share = server["share"]
    (share / "real.txt").write_bytes(b"precious")
    os.symlink("real.txt", share / "alias")
    kept = a.open("real.txt", disposition=CreateDisposition.FILE_OPEN)
    doomed = b.open("alias", options=CreateOptions.FILE_DELETE_ON_CLOSE,
                    disposition=CreateDisposition.FILE_OPEN)
    first, last = (kept, doomed) if last_close == "the asking open" else (doomed, kept)
    first.close()                                       # pending: the file is still open
    assert os.path.lexists(share / "alias")
    last.close()
    assert not os.path.lexists(share / "alias")
    assert (share / "real.txt").read_bytes() == b"precious"


def rename(client: Client, o: Open, new_name: str) -> None:
    """FileRenameInformation through SET_INFO (smbprotocol's own structures)."""
    from smbprotocol.file_info import FileRenameInformation
    from smbprotocol.open import SMB2SetInfoRequest
    info = FileRenameInformation()
    info["replace_if_exists"] = False
    info["file_name"] = new_name.encode("utf-16-le")
    request = SMB2SetInfoRequest()
    request["info_type"], request["file_info_class"] = info.INFO_TYPE, info.INFO_CLASS
    request["file_id"] = o.file_id
    request["buffer"] = info
    client.conn.receive(client.conn.send(request, client.session.session_id, client.tree.tree_connect_id))


def set_delete_pending(client: Client, o: Open) -> None:
    """FileDispositionInformation through SET_INFO: the file goes at its last close."""
    info = FileDispositionInformation()
    info["delete_pending"] = True
    request = SMB2SetInfoRequest()
    request["info_type"] = InfoType.SMB2_0_INFO_FILE
    request["file_info_class"] = FileInformationClass.FILE_DISPOSITION_INFORMATION
    request["file_id"] = o.file_id
    request["buffer"] = info
    client.conn.receive(client.conn.send(request, sid=client.session.session_id, tid=client.tree.tree_connect_id))


def name_of(client: Client, o: Open) -> str:
    """The open's name as the server has it (FileNormalizedNameInformation, SMB 3.1.1)."""
    request = SMB2QueryInfoRequest()
    request["info_type"] = InfoType.SMB2_0_INFO_FILE
    request["file_info_class"] = 48
    request["output_buffer_length"] = 4096
    request["file_id"] = o.file_id
    answer = client.conn.receive(client.conn.send(request, sid=client.session.session_id,
                                                  tid=client.tree.tree_connect_id))
    response = SMB2QueryInfoResponse()
    response.unpack(answer["data"].get_value())
    raw = response["buffer"].get_value()
    return raw[4:4 + int.from_bytes(raw[:4], "little")].decode("utf-16-le")


def open_on_both(pair, share, name: str) -> tuple[Open, Open]:
    """A new file `name`, opened through each worker: (a's open, b's open)."""
    a, b, _wa, _wb = pair
    (share / name).write_bytes(b"x")
    return (a.open(name, disposition=CreateDisposition.FILE_OPEN),
            b.open(name, disposition=CreateDisposition.FILE_OPEN))


def test_an_open_on_another_worker_takes_the_new_name_of_a_rename(pair, server):
    """A file open through one worker and renamed through the other: the first open has
    the new name too (as every open of the file has in one process), so that a delete on
    close asked through it removes the file under its new name. Fails on a server whose
    other worker's open keeps the old name: the delete found nothing under it, and the
    renamed file stayed."""
    a, b, _wa, _wb = pair
    share = server["share"]
    kept, moving = open_on_both(pair, share, "before.txt")
    rename(b, moving, "after.txt")
    moving.close()
    deadline = time.monotonic() + 5         # (the other worker is told: a moment later)
    while name_of(a, kept) != "after.txt" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert name_of(a, kept) == "after.txt"
    set_delete_pending(a, kept)
    kept.close()
    assert sorted(p.name for p in share.iterdir() if not p.name.startswith("probe")) == []


def wake_socket_of(server, worker: int) -> str:
    """The path of a worker's wake-up socket (hints from the other workers come there)."""
    run = os.path.dirname(server["control"])
    store = next(os.path.join(run, n) for n in os.listdir(run) if n.startswith("store-"))
    return os.path.join(store, f"wake-{worker}")


def test_a_query_or_a_rename_through_another_workers_open_uses_the_new_name_without_the_hint(pair, server):
    """A file open through one worker and renamed through the other, while the first
    worker's wake-up socket is out of the way (the rename's hint is lost, or not read yet):
    a query of the open's name answers the new name, and a rename through that open renames
    the file under its new name. Fails on a server whose worker learns another worker's
    renames only from the hint: the query answered the old name, and the rename found no
    file under it."""
    a, b, wa, _wb = pair
    share = server["share"]
    kept, moving = open_on_both(pair, share, "first.txt")
    socket_path = wake_socket_of(server, wa)
    os.rename(socket_path, socket_path + ".aside")
    try:
        rename(b, moving, "second.txt")
        moving.close()
        assert name_of(a, kept) == "second.txt"
        rename(b, (moving := b.open("second.txt", disposition=CreateDisposition.FILE_OPEN)), "third.txt")
        moving.close()
        rename(a, kept, "fourth.txt")
    finally:
        os.rename(socket_path + ".aside", socket_path)
    assert name_of(a, kept) == "fourth.txt"
    kept.close()
    assert sorted(p.name for p in share.iterdir() if not p.name.startswith("probe")) == ["fourth.txt"]


def test_renames_in_a_row_reach_a_worker_that_was_stopped_meanwhile(pair, server):
    """A file renamed again and again through one worker while the worker of another open of
    it is stopped: once it goes on, that open has the last name. Fails on a server that
    records each rename only for the workers whose opens bear its old name (the stopped
    worker's still bore the first: it learnt the first rename alone)."""
    a, b, wa, _wb = pair
    share = server["share"]
    (share / "name0.txt").write_bytes(b"x")
    kept = a.open("name0.txt", disposition=CreateDisposition.FILE_OPEN)
    moving = b.open("name0.txt", disposition=CreateDisposition.FILE_OPEN)
    pid = next(w["pid"] for w in status_of(server)["workers"] if w["worker"] == wa)
    os.kill(pid, signal.SIGSTOP)
    try:
        for i in range(1, 21):
            rename(b, moving, f"name{i}.txt")
    finally:
        os.kill(pid, signal.SIGCONT)
    moving.close()
    deadline = time.monotonic() + 5
    while name_of(a, kept) != "name20.txt" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert name_of(a, kept) == "name20.txt"
    kept.close()


def test_directory_with_an_open_file_on_another_worker_is_not_renamed(pair, server):
    a, b, _wa, _wb = pair
    a.open("outer", directory=True).close()
    inner = a.open("outer\\inner.txt")
    outer = b.open("outer", directory=True)
    with pytest.raises(SMBResponseException) as e:
        rename(b, outer, "outer2")
    assert status_code(e) == 0xC0000022                 # ACCESS_DENIED: a file inside is open
    inner.close()
    rename(b, outer, "outer2")
    assert (server["share"] / "outer2" / "inner.txt").exists()


# -- byte-range locks ---------------------------------------------------------------------------
def test_byte_range_locks_across_workers(pair):
    a, b, _wa, _wb = pair
    fa, fb = a.open("locked.bin"), b.open("locked.bin")
    fa.write(b"x" * 200, 0)
    fa.lock([element(100, 10, EXCLUSIVE_NOW)])
    with pytest.raises(SMBResponseException) as e:
        fb.lock([element(105, 1, SHARED_NOW)])
    assert status_code(e) == LOCK_NOT_GRANTED
    with pytest.raises(SMBResponseException) as e:
        fb.read(104, 2)
    assert status_code(e) == FILE_LOCK_CONFLICT
    with pytest.raises(SMBResponseException) as e:
        fb.write(b"y", 100)
    assert status_code(e) == FILE_LOCK_CONFLICT
    assert fb.read(0, 100) == b"x" * 100                 # outside the lock
    fb.lock([element(0, 10, EXCLUSIVE_NOW)])             # no overlap: granted
    # a blocking lock waits for the other worker's unlock (retried on a timer there)
    result = {}

    def blocking():
        try:
            fb.lock([element(100, 10, LockFlags.SMB2_LOCKFLAG_EXCLUSIVE_LOCK)])
            result["ok"] = True
        except Exception as err:
            result["error"] = err

    t = threading.Thread(target=blocking, daemon=True)
    t.start()
    time.sleep(0.5)
    assert t.is_alive(), result                          # pending
    fa.lock([element(100, 10, LockFlags.SMB2_LOCKFLAG_UNLOCK)])
    t.join(10)
    assert result == {"ok": True}
    with pytest.raises(SMBResponseException) as e:      # now b's
        fa.lock([element(100, 1, EXCLUSIVE_NOW)])
    assert status_code(e) == LOCK_NOT_GRANTED
    fb.close()                                           # closing drops its locks
    fa.lock([element(100, 10, EXCLUSIVE_NOW)])


def test_a_costly_lock_refused_in_the_kernel_is_given_back_in_the_store_too(pair, server):
    """A LOCK of 512 ranges has its kernel change made off the event loop, after its locks
    are in the workers' store; refused there by a local program's lock, they leave the store
    again: the other worker may take any of them. Taken, the other worker sees them all."""
    a, b, _wa, _wb = pair
    fa, fb = a.open("costly.bin"), b.open("costly.bin")
    many = [element(2 * i, 1, EXCLUSIVE_NOW) for i in range(512)]
    local = os.open(server["share"] / "costly.bin", os.O_RDWR)
    try:
        fcntl.fcntl(local, fcntl.F_OFD_SETLK, struct.pack("hh4xqqi4x", fcntl.F_RDLCK, os.SEEK_SET, 600, 1, 0))
        with pytest.raises(SMBResponseException) as e:
            fa.lock(many)
        assert status_code(e) == LOCK_NOT_GRANTED
    finally:
        os.close(local)
    fb.lock([element(0, 1, EXCLUSIVE_NOW)])         # none of them is held
    fb.lock([element(0, 1, LockFlags.SMB2_LOCKFLAG_UNLOCK)])
    fa.lock(many)
    with pytest.raises(SMBResponseException) as e:
        fb.lock([element(2 * 511, 1, EXCLUSIVE_NOW)])
    assert status_code(e) == LOCK_NOT_GRANTED


# -- a worker killed ----------------------------------------------------------------------------
def test_killed_worker_is_replaced_and_its_state_goes(pair, server):
    a, b, wa, wb = pair
    # a's worker holds a share mode and a lock that b's conflict with
    a.open("held-open.txt", share=0)
    fa_locked = a.open("held-lock.bin")
    fa_locked.lock([element(0, 1, EXCLUSIVE_NOW)])
    fb_locked = b.open("held-lock.bin")
    with pytest.raises(SMBResponseException):
        fb_locked.lock([element(0, 1, EXCLUSIVE_NOW)])
    # large transfers on both workers at once
    size, chunk = 48 << 20, 1 << 20
    data_a, data_b = os.urandom(size), os.urandom(size)
    progress = {"a": 0, "b": 0}
    errors = {}

    def transfer(client, name, data, key):
        try:
            f = client.open(name)
            for off in range(0, size, chunk):
                f.write(data[off:off + chunk], off)
                progress[key] = off + chunk
            f.close()
        except Exception as err:
            errors[key] = err

    ta = threading.Thread(target=transfer, args=(a, "big-a.bin", data_a, "a"), daemon=True)
    tb = threading.Thread(target=transfer, args=(b, "big-b.bin", data_b, "b"), daemon=True)
    ta.start()
    tb.start()
    deadline = time.monotonic() + 30
    while progress["a"] < 4 * chunk and time.monotonic() < deadline and not errors:
        time.sleep(0.01)
    assert progress["a"] >= 4 * chunk, (progress, errors)
    assert progress["a"] < size and progress["b"] < size, "the transfers ended before the kill"
    pid = next(w["pid"] for w in status_of(server)["workers"] if w["worker"] == wa)
    os.kill(pid, signal.SIGKILL)
    ta.join(60)
    tb.join(120)
    assert "a" in errors                                  # its connection died with its worker
    assert "b" not in errors, errors
    assert hashlib.sha256((server["share"] / "big-b.bin").read_bytes()).digest() == \
        hashlib.sha256(data_b).digest()
    # the supervisor logged the death and started a new worker in its place
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        workers = {w["worker"]: w for w in status_of(server)["workers"]}
        if workers[wa].get("pid") not in (None, pid) and "error" not in workers[wa]:
            break
        time.sleep(0.1)
    assert workers[wa]["pid"] not in (None, pid) and workers[wa]["restarts"] == 1, workers
    assert f"worker {wa} (pid {pid}) died: killed by signal 9" in server["log"].read_text()
    # the dead worker's share mode and lock are gone
    b.open("held-open.txt", share=0).close()
    fb_locked.lock([element(0, 1, EXCLUSIVE_NOW)])
    # and a client reaches the new worker (a fresh connection may land on either)
    c = Client(server["port"])
    c.open("after.txt").close()
    c.close()


# -- a stop -------------------------------------------------------------------------------------
def test_a_dead_worker_is_not_restarted_before_its_entries_are_removed(pair, server):
    """The removal of a dead worker's entries fails (its store cannot be opened for a
    moment): the slot is started again only once a later try removed them, so that they do
    not count as the new worker's own (a file it held exclusively would stay refused)."""
    a, b, wa, _wb = pair
    a.open("held.txt", share=0)
    with pytest.raises(SMBResponseException) as e:
        b.open("held.txt")
    assert status_code(e) == SHARING_VIOLATION
    run = os.path.dirname(server["control"])
    store = next(os.path.join(run, n) for n in os.listdir(run) if n.startswith("store-"))
    os.rename(store, store + ".aside")
    with open(store, "w"):                  # where the store was: not a directory
        pass
    pid = next(w["pid"] for w in status_of(server)["workers"] if w["worker"] == wa)
    try:
        os.kill(pid, signal.SIGKILL)
        time.sleep(1.5)                     # reaped; its cleanup failed, and was tried again
    finally:
        os.unlink(store)
        os.rename(store + ".aside", store)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        workers = status_of(server)["workers"]
        if all(w.get("pid") and "error" not in w for w in workers) and \
                next(w["pid"] for w in workers if w["worker"] == wa) != pid:
            break
        time.sleep(0.1)
    else:
        pytest.fail("the worker was not restarted")
    b.open("held.txt").close()              # the dead worker's open is gone from the store
    assert "could not be removed" in server["log"].read_text()


@pytest.fixture
def small_store(tmp_path, monkeypatch):
    """A server with two workers whose shared store's map is 512 KiB (the default is 1 GiB)."""
    monkeypatch.setenv("SMBRING_STORE_MAP_SIZE", str(512 * 1024))
    share = tmp_path / "share"
    share.mkdir()
    (tmp_path / "run").mkdir()
    proc, port, log = spawn(tmp_path, str(share), "--share", "share", "--workers", "2",
                            "--control-socket", str(tmp_path / "run" / "control"),
                            "--shutdown-timeout", "2")
    yield {"port": port, "proc": proc, "log": log}
    stop(proc)


def test_a_full_store_refuses_new_opens_and_closes_go_on(small_store):
    client = Client(small_store["port"])
    held = []
    with pytest.raises(SMBResponseException) as e:
        for i in range(5000):           # each open records its long path in the store
            held.append(client.open(f"{i:04d}" + "x" * 200))
    assert status_code(e) == 0xC000009A                  # STATUS_INSUFFICIENT_RESOURCES
    assert len(held) > 10
    for o in held:                                       # every close succeeds
        o.close()
    client.open("after.txt").close()                     # room again
    client.close()
    assert small_store["proc"].poll() is None
    assert "new entries refused" in small_store["log"].read_text()


def test_sigterm_stops_every_worker(server):
    c = Client(server["port"])
    c.open("f.txt").close()
    pids = [w["pid"] for w in status_of(server)["workers"]]
    assert len(pids) == 2 and all(pids)
    server["proc"].send_signal(signal.SIGTERM)
    assert server["proc"].wait(20) == 0
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert not os.path.exists(server["control"])
    assert not os.path.exists(server["control"] + ".store")
    log = server["log"].read_text()
    assert "worker 1 (pid" in log and "stopped: exit status 0" in log
    c.close()


def test_workers_stop_when_the_supervisor_is_killed(server):
    pids = [w["pid"] for w in status_of(server)["workers"]]
    server["proc"].kill()
    server["proc"].wait(10)
    deadline = time.monotonic() + 15
    alive = pids
    while alive and time.monotonic() < deadline:
        alive = []
        for pid in pids:
            try:
                os.kill(pid, 0)
                alive.append(pid)
            except ProcessLookupError:
                pass
        time.sleep(0.1)
    assert not alive


def test_reload_reaches_every_worker(server, tmp_path):
    server["proc"].send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if server["log"].read_text().count("configuration reloaded") >= 2:
            break
        time.sleep(0.1)
    assert server["log"].read_text().count("configuration reloaded") == 2
    assert server["proc"].poll() is None


def test_workers_auto_runs_one_per_cpu_the_server_may_use(tmp_path):
    """`--workers auto`: one worker per CPU of the server's affinity (a `taskset` or a
    container's limit, not the machine's count). Fails where `auto` is refused or taken for
    one process."""
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one CPU: auto is one process")
    server = start_workers(tmp_path, 1, "--workers", "auto")
    try:
        wait_for_workers(server)
        assert len(status_of(server)["workers"]) == len(os.sched_getaffinity(0))
    finally:
        stop(server["proc"])


def test_status_command_lists_the_workers(server):
    c = Client(server["port"])
    c.open("shown.txt")
    out = subprocess.run([sys.executable, "-m", "smbring.cli", "status", "--control-socket",
                          server["control"]], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "Worker" in out.stdout and "shown.txt" in out.stdout
    c.close()


def test_close_share_reaches_the_trees_of_every_worker(pair, server):
    a, b, wa, wb = pair
    held = a.open("held-a", share=0)
    out = subprocess.run([sys.executable, "-m", "smbring.cli", "control", "close-share", "share", "--json",
                          "--control-socket", server["control"]], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    closed = json.loads(out.stdout)["closed"]
    assert sorted(t["worker"] for t in closed) == sorted([wa, wb])
    for client in (a, b):
        with pytest.raises(SMBResponseException) as e:
            client.open("after-close-share")
        assert status_code(e) == 0xC00000C9      # STATUS_NETWORK_NAME_DELETED
    c = Client(server["port"])                    # the share mode went with the open
    c.open("held-a", share=0).close()
    c.close()
    del held


# -- durable handles and multichannel: offered (each client on one worker: test_workers_handoff)
def test_durable_handle_and_multichannel_offered(server):
    c = Client(server["port"])
    caps = c.conn.server_capabilities.get_value()
    assert caps & Capabilities.SMB2_GLOBAL_CAP_LEASING
    assert caps & Capabilities.SMB2_GLOBAL_CAP_MULTI_CHANNEL
    request = SMB2CreateContextRequest()
    request["buffer_name"] = CreateContextName.SMB2_CREATE_DURABLE_HANDLE_REQUEST
    request["buffer_data"] = SMB2CreateDurableHandleRequest()
    durable = c.open("durable.txt", oplock=RequestedOplockLevel.SMB2_OPLOCK_LEVEL_BATCH,
                     contexts=[request])
    assert durable.oplock_level == 9
    assert any(isinstance(x, SMB2CreateDurableHandleResponse) for x in durable.answers or ())
    c.close()


# -- change notify ------------------------------------------------------------------------------
def waiting_watch(client, name: str) -> FileSystemWatcher:
    """A CHANGE_NOTIFY (file names) on a new directory `name`, checked to be waiting."""
    watcher = FileSystemWatcher(client.open(name, directory=True))
    watcher.start(CompletionFilter.FILE_NOTIFY_CHANGE_FILE_NAME)
    time.sleep(0.3)
    assert not watcher.response_event.is_set()
    return watcher


def test_change_notify_sees_the_other_workers_changes(pair):
    a, b, _wa, _wb = pair
    watcher = waiting_watch(a, "watched")
    b.open("watched\\new.txt").close()
    assert watcher.response_event.wait(10), "no change reported"
    assert any(r["file_name"].get_value() == "new.txt" for r in watcher.result)


@pytest.mark.parametrize("how", ["delete on close", "disposition"])
def test_a_watch_ends_when_the_other_worker_deletes_its_directory(pair, how):
    """A CHANGE_NOTIFY waiting on a directory ends with STATUS_DELETE_PENDING when another
    client marks the directory for deletion, as in one process (smbtorture's
    smb2.notify.rmdir3 and rmdir4). A worker's watches are its own and nothing changes on
    disk until the last open closes, so the worker that marked it tells the other; before,
    the request waited until its handle closed."""
    a, b, _wa, _wb = pair
    watcher = waiting_watch(a, "going")
    if how == "delete on close":
        b.open("going", directory=True, options=CreateOptions.FILE_DELETE_ON_CLOSE).close()
    else:
        other = b.open("going", directory=True)
        set_delete_pending(b, other)
        other.close()
    assert watcher.response_event.wait(10), "the watch still waits"
    with pytest.raises(SMBResponseException) as e:
        watcher.result
    assert status_code(e) == DELETE_PENDING


# -- the server's bounds count every worker -----------------------------------------------------
@pytest.fixture
def bounded(tmp_path):
    """Two workers with `max smbd processes = 3` and a share `limited` with `max connections = 1`."""
    from servers import free_port
    share = tmp_path / "share"
    share.mkdir()
    (tmp_path / "run").mkdir()
    port = free_port()
    conf = tmp_path / "smb.conf"
    conf.write_text(f"[global]\nlisten = 127.0.0.1:{port}\nsmbring workers = 2\nmax smbd processes = 3\n"
                    f"control socket = {tmp_path / 'run' / 'control'}\n"
                    f"[share]\npath = {share}\nread only = no\n"
                    f"[limited]\npath = {share}\nread only = no\nmax connections = 1\n")
    proc, port, log = spawn(tmp_path, "--config", str(conf), port=port)
    yield {"port": port, "share": share, "proc": proc, "log": log,
           "control": str(tmp_path / "run" / "control")}
    stop(proc)


def connections_per_worker(server) -> dict:
    return {w["worker"]: w.get("connections", 0) for w in status_of(server)["workers"]}


def test_connection_and_tree_bounds_count_every_worker(bounded):
    a = Client(bounded["port"])
    TreeConnect(a.session, r"\\127.0.0.1\limited").connect()
    for _ in range(20):         # b on the other worker
        b = Client(bounded["port"])
        if all(n == 1 for n in connections_per_worker(bounded).values()):
            break
        b.close()
        time.sleep(0.2)         # (its worker counts it gone)
    else:
        pytest.fail("no connection reached the other worker")
    with pytest.raises(SMBResponseException):      # the share's one tree connect is a's
        TreeConnect(b.session, r"\\127.0.0.1\limited").connect()
    c = Client(bounded["port"])                     # the third connection in all
    for _ in range(6):          # past max smbd processes on whichever worker it lands
        with pytest.raises(Exception):
            Client(bounded["port"])
    assert "max smbd processes = 3" in bounded["log"].read_text()
    for client in (a, b, c):
        client.close()


# -- the store's rules between two real processes -----------------------------------------------
OTHER_WORKER = r"""
import sys, types
from smbring.server.shared_store import Store, SharedByteRangeLocks, SharedShareModes, SharedDeletePending
from smbring.smb.locks import Lock
store = Store(sys.argv[1], 2)
locks = SharedByteRangeLocks(store, None)
modes = SharedShareModes(store)
pending = SharedDeletePending(store, modes)
K, P = (1, 10), (1, 20)
assert locks.acquire_all(K, [Lock(100, 10, True, 7), Lock(200, 10, False, 7), Lock(300, 0, True, 7)])
assert modes.check_and_add(K, 7, 0x1, 0)                # reads, shares nothing
assert modes.check_and_add(P, 8, 0x10000, 7)            # deletes, shares all
pending.mark(types.SimpleNamespace(key=P, is_dir=False, stream=None, path=lambda: "/share/doomed"))
print("ready", flush=True)
sys.stdin.readline()
"""


def test_store_rules_between_processes_and_a_dead_workers_cleanup(tmp_path):
    from smbring.server import shared_store
    from smbring.server.shared_store import (SharedByteRangeLocks, SharedShareModes, Store,
                                             remove_worker)
    directory = str(tmp_path / "store")
    os.mkdir(directory, 0o700)
    env = shared_store.open_environment(directory)
    for name in shared_store.DATABASES:
        env.open_db(name)
    env.close()
    other = subprocess.Popen([sys.executable, "-c", OTHER_WORKER, directory], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline().strip() == "ready"
        store = Store(directory, 1)
        locks, modes = SharedByteRangeLocks(store, None), SharedShareModes(store)
        key, doomed = (1, 10), (1, 20)
        assert locks.conflicts(key, 105, 1, False, 1)          # its exclusive lock
        assert not locks.conflicts(key, 205, 1, False, 1)      # shared beside shared
        assert locks.conflicts(key, 205, 1, True, 1)
        assert locks.conflicts(key, 295, 10, True, 1)          # a zero-length lock at 300 inside
        assert not locks.conflicts(key, 300, 0, True, 1)       # two zero-length locks never overlap
        assert locks.io_allowed(key, 290, 20, 1, write=True)   # zero-length locks never block I/O
        assert locks.io_allowed(key, 200, 5, 1, write=False)   # reading under a shared lock
        assert not locks.io_allowed(key, 200, 5, 1, write=True)
        assert not locks.io_allowed(key, 100, 1, 1, write=False)
        assert not locks.acquire_all(key, [Lock(0, 1, True, 1), Lock(109, 1, False, 1)])
        assert locks.local.count(key, 1) == 0                  # all or nothing
        assert not modes.check_and_add(key, 1, 0x1, 7)         # it shares nothing
        assert modes.count(key) == 1 and not modes.has_writer_here(key)
        assert shared_store.SharedDeletePending(store, modes).is_pending(doomed)
        other.kill()
        other.wait()
        store.close()           # (one environment per process: the supervisor holds none)
        assert remove_worker(directory, 2) == 5               # 3 locks, 2 share modes
        store = Store(directory, 1)
        locks, modes = SharedByteRangeLocks(store, None), SharedShareModes(store)
        assert not locks.conflicts(key, 105, 1, True, 1) and locks.idle(key)
        assert modes.check_and_add(key, 1, 0x1, 0)
        # no open of the doomed file is left: its pending delete goes (nobody would do it)
        assert not shared_store.SharedDeletePending(store, modes).is_pending(doomed)
        store.close()
    finally:
        other.kill()
        other.wait()
