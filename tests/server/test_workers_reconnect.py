"""A client reconnecting under a new ClientGuid with ``smbring serve --workers 2``, its new
connection served by another worker than its old one, compared with the same sequence in one
process: a SESSION_SETUP naming the old session as its PreviousSessionId ends that session
(its non-durable opens closed, its durable ones detached) where it is the same user's, and
ends nothing where it is another user's.

Placing the new connection on the other worker: the old connection's worker is stopped
(SIGSTOP) while the new one connects (test_workers_handoff.connect_while_stopped); its
ClientGuid is new, so no worker serves it yet and no hand-off moves it back."""
from __future__ import annotations

import os
import struct
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "security"))
import test_workers_durable as durable  # noqa: E402
import test_workers_handoff as workers  # noqa: E402
from servers import PASSWORD, PASSWORD2, USER, USER2, stop  # noqa: E402
from worker_servers import start as start_workers  # noqa: E402
from worker_servers import worker_of  # noqa: E402
from smbcore import create_body, read_body  # noqa: E402

from smbring.smb import wire  # noqa: E402

SHARE_NONE = 0


@pytest.fixture(params=[1, 2], ids=["one-process", "two-workers"])
def server(request, tmp_path):
    server = start_workers(tmp_path, request.param, second_user=True)
    yield server
    stop(server["proc"])


def reconnect(server, old: durable.Client, user: str = USER, password: str = PASSWORD):
    """A new connection under a new ClientGuid, on the other worker than `old`'s (with two),
    logged on as `user` naming `old`'s session as its PreviousSessionId: (client, session,
    the answer's time)."""
    guid = os.urandom(16)
    if durable.two_workers(server):
        c = workers.connect_while_stopped(server, old.worker, lambda: workers.connect(server["port"], guid))
        assert worker_of(server, c) != old.worker
    else:
        c = workers.connect(server["port"], guid)
    started = time.monotonic()
    s = c.logon(user, password, previous=old.tree.session.id)
    return c, s, time.monotonic() - started


def reads(client: durable.Client, fid: bytes) -> int:
    return client.tree.request(wire.READ, read_body(fid, 10)).status


def test_previous_session_id_ends_the_same_users_session_on_another_worker(server):
    old = durable.Client(server)
    plain = old.create("plain", share_access=SHARE_NONE).file_id
    fid, reclaimer = durable.durable_open(old, "kept", "dhnq-batch", SHARE_NONE)
    assert reads(old, plain) == wire.STATUS_END_OF_FILE
    c, s, took = reconnect(server, old)
    assert took < 2.0, took
    # answered once the old session has ended: its requests find no session
    assert reads(old, plain) == wire.STATUS_USER_SESSION_DELETED
    assert reads(old, fid) == wire.STATUS_USER_SESSION_DELETED
    # its plain open was closed (its share mode gone), at once
    tree = c.tree(s, "share")
    r = tree.create("plain", wire.GENERIC_READ | wire.GENERIC_WRITE, share_access=SHARE_NONE)
    assert r.status == wire.STATUS_SUCCESS, r
    tree.close(r.file_id)
    # its durable open was detached, not closed: the old client reclaims it on its own worker
    assert durable.reclaim(server, old.guid, reclaimer, wait=0).status == wire.STATUS_SUCCESS
    old.close()
    c.close()


def test_previous_session_id_of_another_user_ends_nothing_on_another_worker(server):
    """A PreviousSessionId is a number anyone may send: bob naming alice's session, however
    it reaches her worker, leaves it and its opens as they are."""
    old = durable.Client(server)
    plain = old.create("plain", share_access=SHARE_NONE).file_id
    c, s, _took = reconnect(server, old, USER2, PASSWORD2)
    time.sleep(0.3)         # (anything sent to the other worker has arrived by now)
    assert reads(old, plain) == wire.STATUS_END_OF_FILE
    tree = c.tree(s, "share")
    r = tree.create("plain", wire.GENERIC_READ, share_access=7)
    assert r.status == wire.STATUS_SHARING_VIOLATION, r
    old.close()
    c.close()


def test_a_session_id_of_a_worker_that_does_not_answer_costs_a_bounded_wait(server):
    """The worker named in the PreviousSessionId is stopped: the logon is answered after the
    bound (2 s), the old session left as it is."""
    if not durable.two_workers(server):
        pytest.skip("another worker")
    import signal
    from worker_servers import pid_of
    old = durable.Client(server)
    plain = old.create("plain", share_access=SHARE_NONE).file_id
    guid = os.urandom(16)
    pid = pid_of(server, old.worker)
    os.kill(pid, signal.SIGSTOP)
    try:
        c = workers.connect(server["port"], guid)
        started = time.monotonic()
        c.logon(USER, PASSWORD, previous=old.tree.session.id)
        took = time.monotonic() - started
    finally:
        os.kill(pid, signal.SIGCONT)
    assert 1.5 <= took < 5, took
    time.sleep(0.3)
    # (the request was read late: ending a session then is what one process would have done)
    assert reads(old, plain) in (wire.STATUS_END_OF_FILE, wire.STATUS_USER_SESSION_DELETED)
    old.close()
    c.close()


def test_requests_between_workers_are_checked():
    from smbring.server import handoff
    m = handoff.encode_request(handoff.END_SESSION, b"\0" * 8 + b"uid:0")
    assert handoff.decode_request(m) == (handoff.END_SESSION, b"\0" * 8 + b"uid:0")
    assert handoff.decode_request(m + b"\0") is None and handoff.decode_request(m[:-1]) is None
    assert handoff.decode_request(handoff.encode_request(99, b"")) is None
    assert handoff.decode_request(handoff.encode_request(handoff.END_SESSION, bytes(handoff.MAX_REQUEST + 1))) is None


# -- AppInstanceId ----------------------------------------------------------------------------------
APP_INSTANCE_ID = bytes.fromhex("45BCA66AEFA7F74A9008FA462E144D74")
BATCH, LEVEL_II = 0x09, 0x01


def app_instance(instance: bytes):
    return (APP_INSTANCE_ID, struct.pack("<HH16s", 20, 0, instance))


def app_open(client: durable.Client, name: str, instance: bytes):
    return client.create(name, oplock=BATCH, share_access=SHARE_NONE,
                         contexts=[workers.dh2q(os.urandom(16)), app_instance(instance)])


def test_an_app_instance_closes_its_earlier_open_on_another_worker(server):
    """MS-SMB2 3.3.5.9.13, as smbtorture's durable-v2-open.app-instance: the application's
    new instance (another client) opens the file; its earlier instance's open is closed
    first, without a break, wherever it is."""
    instance = os.urandom(16)
    first = durable.Client(server)
    r = app_open(first, "app", instance)
    assert r.status == wire.STATUS_SUCCESS and durable.oplock_of(r) == BATCH, r
    fid = r.file_id
    second = durable.Client(server, avoid=first.worker)
    r = app_open(second, "app", instance)
    assert r.status == wire.STATUS_SUCCESS, r
    assert durable.oplock_of(r) == BATCH            # alone on the file
    assert first.next_break(0.5) is None            # closed, not broken
    assert reads(first, fid) == wire.STATUS_FILE_CLOSED
    first.close()
    second.close()


def test_another_users_app_instance_closes_nothing_on_another_worker(server):
    """The same AppInstanceId sent by bob: alice's open is broken as any holder's (she
    answers), never closed; bob meets her share mode."""
    instance = os.urandom(16)
    first = durable.Client(server)
    r = app_open(first, "app", instance)
    assert r.status == wire.STATUS_SUCCESS, r
    fid = r.file_id
    guid = os.urandom(16)
    if durable.two_workers(server):
        raw = workers.connect_while_stopped(server, first.worker, lambda: workers.connect(server["port"], guid))
    else:
        raw = workers.connect(server["port"], guid)
    tree = raw.tree(raw.logon(USER2, PASSWORD2), "share")
    r = tree.request(wire.CREATE, create_body("app", durable.READ, wire.FILE_OPEN, 0, share_access=7,
                                              oplock=BATCH, contexts=[workers.dh2q(os.urandom(16)),
                                                                      app_instance(instance)]))
    raw.sock.settimeout(20)
    while r.status == wire.STATUS_PENDING:
        body = first.next_break(0.2)
        if body is not None:
            ack = first.tree.request(wire.OPLOCK_BREAK, struct.pack("<HBBI16s", 24, LEVEL_II, 0, 0, fid))
            assert ack.status == wire.STATUS_SUCCESS, ack
        r = raw.response_to(r.header.message_id)
    assert r.status == wire.STATUS_SHARING_VIOLATION, r
    assert reads(first, fid) == wire.STATUS_END_OF_FILE
    first.close()
    raw.close()
