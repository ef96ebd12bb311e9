"""Credits through a real client under load: two sessions on one smbprotocol connection, each
driven by its own thread, interleave small requests of the kinds a server answers differently
(opens, writes, reads, closes, errors, related compounds, directory listings, a CHANGE_NOTIFY
cancelled, a LOCK that waits for another). smbprotocol asks with each request for the credits
it spends and fails a request, rather than waiting, when it holds none: one answer granting
less than its request spent shows as a lower balance at the end, a run of them as "requires 1
credits but only 0" in a thread. The server must leave the balance as the logons left it
(MS-SMB2 3.3.1.2: a client never holds none; smbring grants as Samba does)."""
from __future__ import annotations

import threading
import time
import uuid

import pytest

pytest.importorskip("smbprotocol")
from smbprotocol.change_notify import CompletionFilter, FileSystemWatcher  # noqa: E402
from smbprotocol.connection import Connection  # noqa: E402
from smbprotocol.exceptions import SMBResponseException  # noqa: E402
from smbprotocol.file_info import FileInformationClass, InfoType  # noqa: E402
from smbprotocol.open import (  # noqa: E402
    CreateDisposition, CreateOptions, FileAttributes, ImpersonationLevel, LockFlags, Open,
    QueryDirectoryFlags, ShareAccess, SMB2CloseRequest, SMB2LockElement, SMB2QueryInfoRequest,
)
from smbprotocol.session import Session  # noqa: E402
from smbprotocol.tree import TreeConnect  # noqa: E402

from servers import PASSWORD, USER  # noqa: E402

ROUNDS = 40
RELATED = b"\xff" * 16              # a related request's FileId: the compound's previous one
GENERIC_ALL = 0x10000000
NOT_FOUND = 0xC0000034              # STATUS_OBJECT_NAME_NOT_FOUND
STATUS_PENDING = 0x00000103


def available(connection: Connection) -> int:
    """The credits the client holds (the MessageIds it may still send)."""
    window = connection.sequence_window
    return window["high"] - window["low"]


def opened(tree: TreeConnect, name: str, disposition=CreateDisposition.FILE_OPEN_IF, directory=False) -> Open:
    f = Open(tree, name)
    f.create(ImpersonationLevel.Impersonation, GENERIC_ALL,
             FileAttributes.FILE_ATTRIBUTE_DIRECTORY if directory else FileAttributes.FILE_ATTRIBUTE_NORMAL,
             ShareAccess.FILE_SHARE_READ | ShareAccess.FILE_SHARE_WRITE | ShareAccess.FILE_SHARE_DELETE,
             disposition, CreateOptions.FILE_DIRECTORY_FILE if directory else CreateOptions.FILE_NON_DIRECTORY_FILE)
    return f


def lock_element(flags: int) -> SMB2LockElement:
    element = SMB2LockElement()
    element["offset"], element["length"], element["flags"] = 0, 10, flags
    return element


def answered(request, timeout=10.0):
    """The first answer to a request (its interim one, when it waits), once it is in."""
    deadline = time.monotonic() + timeout
    while request.response is None:
        assert time.monotonic() < deadline, "no answer"
        time.sleep(0.001)
    return request.response


def stat_compound(tree: TreeConnect, name: str) -> list[int]:
    """CREATE, QUERY_INFO and CLOSE related in one frame (as smbclient.stat sends them): the
    status of each answer."""
    create, _ = Open(tree, name).create(
        ImpersonationLevel.Impersonation, 0x80, FileAttributes.FILE_ATTRIBUTE_NORMAL,
        ShareAccess.FILE_SHARE_READ | ShareAccess.FILE_SHARE_WRITE | ShareAccess.FILE_SHARE_DELETE,
        CreateDisposition.FILE_OPEN, 0, send=False)
    query = SMB2QueryInfoRequest()
    query["info_type"] = InfoType.SMB2_0_INFO_FILE
    query["file_info_class"] = FileInformationClass.FILE_STANDARD_INFORMATION
    query["output_buffer_length"] = 1024
    query["file_id"] = RELATED
    close = SMB2CloseRequest()
    close["file_id"] = RELATED
    connection, session = tree.session.connection, tree.session
    requests = connection.send_compound([create, query, close], session.session_id, tree.tree_connect_id,
                                        related=True)
    statuses = []
    for request in requests:
        try:
            statuses.append(connection.receive(request)["status"].get_value())
        except SMBResponseException as e:
            statuses.append(e.status)
    return statuses


def work(tree: TreeConnect, me: str, rounds: int) -> None:
    """A round of every kind of request, `rounds` times."""
    directory = opened(tree, me, directory=True)
    quiet = opened(tree, f"{me}\\quiet", directory=True)     # (watched: nothing changes in it)
    try:
        for i in range(rounds):
            f = opened(tree, f"{me}\\f{i}", CreateDisposition.FILE_OVERWRITE_IF)
            f.write(me.encode() * 10)
            assert f.read(0, 10) == me.encode() * 5
            f.close()
            with pytest.raises(SMBResponseException) as missing:      # an error answer
                opened(tree, f"{me}\\missing{i}", CreateDisposition.FILE_OPEN)
            assert missing.value.status == NOT_FOUND
            assert stat_compound(tree, f"{me}\\f{i}") == [0, 0, 0]
            assert stat_compound(tree, f"{me}\\missing{i}") == [NOT_FOUND] * 3   # the chain fails whole
            assert len(directory.query_directory("*", FileInformationClass.FILE_NAMES_INFORMATION,
                                                 QueryDirectoryFlags.SMB2_RESTART_SCANS)) >= i + 4
            # an async request cancelled: the interim answer grants, the final one not
            watcher = FileSystemWatcher(quiet)
            watcher.start(CompletionFilter.FILE_NOTIFY_CHANGE_FILE_NAME)
            watcher.cancel()
            watcher.wait()
            assert getattr(watcher, "is_cancelled", False)     # (set once answered STATUS_CANCELLED)
            # an async request completed: a LOCK waiting for another open's lock
            holder = opened(tree, f"{me}\\f{i}")
            waiter = opened(tree, f"{me}\\f{i}")
            holder.lock([lock_element(LockFlags.SMB2_LOCKFLAG_EXCLUSIVE_LOCK)])
            message, receive = waiter.lock([lock_element(LockFlags.SMB2_LOCKFLAG_EXCLUSIVE_LOCK)], send=False)
            waiting = tree.session.connection.send(message, tree.session.session_id, tree.tree_connect_id)
            interim = answered(waiting)     # (receive(wait=False) would forget the request)
            assert interim["status"].get_value() == STATUS_PENDING
            holder.lock([lock_element(LockFlags.SMB2_LOCKFLAG_UNLOCK)])
            receive(waiting)
            waiter.close()
            holder.close()
    finally:
        quiet.close()
        directory.close()


def test_two_sessions_on_one_connection_keep_their_credits(server):
    connection = Connection(uuid.uuid4(), "127.0.0.1", server["port"], require_signing=True)
    connection.connect()
    try:
        trees = []
        for _ in range(2):      # two sessions (of one user: the credits are the connection's)
            session = Session(connection, USER, PASSWORD)
            session.connect()
            tree = TreeConnect(session, rf"\\127.0.0.1\share")
            tree.connect()
            trees.append(tree)
        before = available(connection)
        errors: list = []
        barrier = threading.Barrier(2)

        def run(tree, me):
            try:
                barrier.wait()
                work(tree, me, ROUNDS)
            except BaseException as e:      # reported by the test, not lost in the thread
                errors.append(f"{me}: {e!r}")
        threads = [threading.Thread(target=run, args=(tree, f"t{n}")) for n, tree in enumerate(trees)]
        start = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors, errors
        assert not any(t.is_alive() for t in threads)
        # every request answered: what each one spent, its answers granted back
        assert available(connection) == before, (before, connection.sequence_window)
        assert time.monotonic() - start < 60
    finally:
        connection.disconnect()
