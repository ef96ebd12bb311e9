"""`smbring serve --workers 2`: every connection of one client (ClientGuid) is served by one
worker, whichever accepted it (server.handoff): connections with one guid all end on one
worker and a second channel binds to the session; a durable handle is reclaimed through a
connection the other worker accepted; smbclient works (SMB2 first, and SMB1 upgrading to
SMB2); garbage and descriptors of the wrong kind on a hand-off socket are refused without
harm; a killed worker's clients go from the store and reconnect to a live worker.

Placing a connection on the other worker: the worker serving the client is stopped
(SIGSTOP) while the connection is made, so the other one accepts it (and hands it over once
the first is continued); raw clients (tests/security/raw.py) set the ClientGuid."""
from __future__ import annotations

import array
import glob
import os
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "security"))
from raw import RawClient  # noqa: E402
from servers import PASSWORD, USER, stop  # noqa: E402
from worker_servers import pid_of, status_of, wait_for_workers, worker_of  # noqa: E402
from worker_servers import start as start_workers  # noqa: E402
from smbcore import create_body, read_body, write_body  # noqa: E402
from smbcore import create_contexts_of as contexts_of  # noqa: E402
from test_sessions_multichannel import bind  # noqa: E402

from smbring.server import handoff  # noqa: E402
from smbring.smb import wire  # noqa: E402

BATCH = 0x09
READ_WRITE = 0x0012019F


def other(worker: int) -> int:
    return 3 - worker


@pytest.fixture
def server(tmp_path):
    server = start_workers(tmp_path)
    yield server
    stop(server["proc"])


def store_directory(server) -> str:
    (store,) = glob.glob(str(server["run"] / "store-*"))
    return store


def connect(port: int, guid: bytes, dialect: int = wire.SMB311) -> RawClient:
    c = RawClient(port)
    r = c.negotiate((dialect,), client_guid=guid)
    assert r.status == wire.STATUS_SUCCESS, r
    return c


def connect_while_stopped(server, worker: int, make):
    """make() run while `worker` is stopped (so the other worker accepts its connection),
    the worker continued half a second later (to take a hand-off that waits for it)."""
    pid = pid_of(server, worker)
    os.kill(pid, signal.SIGSTOP)
    timer = threading.Timer(0.5, os.kill, (pid, signal.SIGCONT))
    timer.start()
    try:
        return make()
    finally:
        timer.join()
        os.kill(pid, signal.SIGCONT)


def handed_count(server) -> int:
    return server["log"].read_text().count("handed to worker")


# -- (1) one client, one worker; a second channel binds -----------------------------------------
def test_connections_of_one_client_end_on_one_worker_and_bind(server):
    port, guid = server["port"], os.urandom(16)
    c1 = connect(port, guid)
    s1 = c1.logon(USER, PASSWORD)
    tree = c1.tree(s1, "share")
    fid = tree.open("mc.txt", wire.GENERIC_READ | wire.GENERIC_WRITE, wire.FILE_CREATE)
    assert tree.request(wire.WRITE, write_body(fid, b"channel data")).status == wire.STATUS_SUCCESS
    home = worker_of(server, c1)
    assert c1.server["capabilities"] & wire.CAP_MULTI_CHANNEL     # offered with workers now
    more = [connect(port, guid) for _ in range(6)]
    # and one the other worker surely accepts
    more.append(connect_while_stopped(server, home, lambda: connect(port, guid)))
    assert {worker_of(server, c) for c in more} == {home}
    assert handed_count(server) >= 1
    c2 = more[-1]                       # the handed one binds to the session
    channel, r = bind(c2, s1)
    assert r.status == wire.STATUS_SUCCESS, r
    r = c2.request(wire.READ, read_body(fid, 100), session=channel, tree_id=tree.id)
    assert r.status == wire.STATUS_SUCCESS and b"channel data" in r.raw
    # a client of another guid is not drawn to that worker
    strangers = [connect(port, os.urandom(16)) for _ in range(2)]
    strangers.append(connect_while_stopped(server, home, lambda: connect(port, os.urandom(16))))
    assert worker_of(server, strangers[-1]) == other(home)
    for c in [c1, *more, *strangers]:
        c.close()


def test_a_zero_guid_is_not_routed(server):
    """SMB 2.0.2 sends no ClientGuid (zero): served where it arrives, never handed."""
    port = server["port"]
    a = connect(port, bytes(16), wire.SMB202)
    home = worker_of(server, a)
    b = connect_while_stopped(server, home, lambda: connect(port, bytes(16), wire.SMB202))
    assert worker_of(server, b) == other(home)
    assert handed_count(server) == 0
    a.close()
    b.close()


# -- (2) a durable handle reclaimed through the other worker's accept -----------------------------
def dh2q(create_guid: bytes) -> tuple[bytes, bytes]:
    return (b"DH2Q", struct.pack("<II8s16s", 0, 0, b"", create_guid))


def dh2c(fid: bytes, create_guid: bytes) -> tuple[bytes, bytes]:
    return (b"DH2C", fid + create_guid + b"\0" * 4)


def logged_on(c: RawClient):
    s = c.logon(USER, PASSWORD)
    return c.tree(s, "share")


def reclaim(tree, fid: bytes, create_guid: bytes, wait: float = 3.0):
    """A DH2C, retried briefly while the server may still be taking the lost connection down."""
    deadline = time.monotonic() + wait
    while True:
        r = tree.request(wire.CREATE, create_body("__ignored__", READ_WRITE, wire.FILE_OPEN, 0,
                                                  contexts=[dh2c(fid, create_guid)], oplock=BATCH))
        while r.status == wire.STATUS_PENDING:      # (the other workers asked for it)
            r = tree.client.response_to(r.header.message_id)
        if r.status != wire.STATUS_OBJECT_NAME_NOT_FOUND or time.monotonic() > deadline:
            return r
        time.sleep(0.1)


def test_a_durable_handle_is_reclaimed_whichever_worker_accepts(server):
    port, guid, create_guid = server["port"], os.urandom(16), os.urandom(16)
    c = connect(port, guid)
    tree = logged_on(c)
    r = tree.request(wire.CREATE, create_body("durable.txt", READ_WRITE, wire.FILE_OPEN_IF, 0,
                                              contexts=[dh2q(create_guid)], oplock=BATCH))
    assert r.status == wire.STATUS_SUCCESS and b"DH2Q" in contexts_of(r), r
    fid = r.file_id
    assert tree.request(wire.WRITE, write_body(fid, b"kept across the loss")).status == wire.STATUS_SUCCESS
    home = worker_of(server, c)
    c.close()                                   # the connection is lost: no CLOSE, no LOGOFF
    time.sleep(0.5)
    # another ClientGuid, accepted by the other worker, naming another CreateGuid: not found
    # (the open's worker is asked, and keeps it: test_workers_reconnect has the moves)
    stranger = connect_while_stopped(server, home, lambda: connect(port, os.urandom(16)))
    assert worker_of(server, stranger) == other(home)
    r = reclaim(logged_on(stranger), fid, os.urandom(16), wait=0)
    assert r.status == wire.STATUS_OBJECT_NAME_NOT_FOUND, r
    stranger.close()
    # its own ClientGuid, accepted by the other worker too: handed home, reclaimed
    before = handed_count(server)
    c2 = connect_while_stopped(server, home, lambda: connect(port, guid))
    assert worker_of(server, c2) == home
    assert handed_count(server) == before + 1
    tree2 = logged_on(c2)
    r = reclaim(tree2, fid, create_guid)
    assert r.status == wire.STATUS_SUCCESS, r
    r = tree2.request(wire.READ, read_body(fid, 100))
    assert r.status == wire.STATUS_SUCCESS and b"kept across the loss" in r.raw
    c2.close()


# -- (3) smbclient --------------------------------------------------------------------------------
@pytest.mark.parametrize("first", ["smb2", "smb1-upgrading"])
def test_smbclient(server, first, tmp_path):
    if not shutil.which("smbclient"):
        pytest.skip("Samba's smbclient is not installed")
    extra = ["--option=client min protocol=NT1"] if first == "smb1-upgrading" else []
    (tmp_path / "up.txt").write_bytes(b"smbclient through the workers\n" * 100)
    for i in range(4):          # (connections spread over both workers)
        out = subprocess.run(["smbclient", "//127.0.0.1/share", "-p", str(server["port"]),
                              "-U", f"{USER}%{PASSWORD}", *extra, "-c",
                              f"put {tmp_path / 'up.txt'} up{i}.txt; get up{i}.txt {tmp_path / 'down.txt'}; ls"],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stdout + out.stderr
        assert (tmp_path / "down.txt").read_bytes() == (tmp_path / "up.txt").read_bytes()


def test_smb1_negotiate_then_smb2_is_routed_on_the_smb2_one(server):
    """An SMB1 NEGOTIATE answered with the SMB2 wildcard, then an SMB2 NEGOTIATE naming a
    client another worker serves: the connection is handed there after the SMB1 one."""
    port, guid = server["port"], os.urandom(16)
    c1 = connect(port, guid)
    home = worker_of(server, c1)

    def upgrading():
        c = RawClient(port)
        c.smb1_negotiate()
        r = c.parse(c.recv_frame())[0]
        assert r.status == wire.STATUS_SUCCESS
        c.next_message_id = 1
        assert c.negotiate((wire.SMB311,), client_guid=guid).status == wire.STATUS_SUCCESS
        return c
    c2 = connect_while_stopped(server, home, upgrading)
    assert worker_of(server, c2) == home
    tree = logged_on(c2)
    assert tree.open("after-smb1.txt", wire.GENERIC_READ | wire.GENERIC_WRITE, wire.FILE_CREATE)
    c1.close()
    c2.close()


# -- (4) the hand-off socket refuses what is not a hand-off --------------------------------------
def handoff_socket(server, worker: int) -> str:
    return handoff.socket_path(store_directory(server), worker)


def negotiate_frame(guid: bytes) -> bytes:
    """An SMB2 NEGOTIATE frame naming `guid`, with its NetBIOS prefix."""
    from smbcore import negotiate_body
    msg = wire.Header(command=wire.NEGOTIATE, message_id=0, credits=1).pack() + \
        negotiate_body((wire.SMB311,), 1, 0, guid)
    return len(msg).to_bytes(4, "big") + msg


def offer(path: str, message: bytes, fds=()) -> bytes:
    """Sends one message (with these descriptors) to a hand-off socket; its answer (b'':
    the connection closed without one)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
        s.settimeout(10)
        s.connect(path)
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
        try:
            s.sendmsg([message], ancillary)
        except OSError:             # (too large for the socket: refused by the kernel already)
            return b""
        try:
            return s.recv(16)
        except ConnectionResetError:
            return b""


def test_the_handoff_socket_is_private_and_refuses_garbage(server, tmp_path):
    port = server["port"]
    pids = {w["worker"]: w["pid"] for w in status_of(server)["workers"]}
    store = store_directory(server)
    assert stat.S_IMODE(os.stat(store).st_mode) == 0o700
    for worker in (1, 2):
        st = os.lstat(handoff.socket_path(store, worker))
        assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    path = handoff_socket(server, 1)
    guid = os.urandom(16)
    good = handoff.encode(guid, negotiate_frame(guid))
    r, w = os.pipe()
    listener = socket.create_server(("127.0.0.1", 0))
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.connect(("127.0.0.1", port))
    elsewhere = socket.create_connection(listener.getsockname())      # TCP, not the server's port
    tcp = socket.create_connection(("127.0.0.1", port))
    unix_a, unix_b = socket.socketpair()
    cases = {
        "empty": (b"", ()),
        "garbage": (os.urandom(200), ()),
        "no descriptor": (good, ()),
        "a pipe": (good, (r,)),
        "a regular file": (good, (os.open(str(tmp_path / "f"), os.O_CREAT | os.O_RDWR),)),
        "a listening socket": (good, (listener.fileno(),)),
        "a UDP socket": (good, (udp.fileno(),)),
        "a Unix socket": (good, (unix_a.fileno(),)),
        "TCP to another port": (good, (elsewhere.fileno(),)),
        "the client's end of a connection to the server": (good, (tcp.fileno(),)),
        "two descriptors": (good, (tcp.fileno(), tcp.fileno())),
        "bad magic": (b"XXXX" + good[4:], (tcp.fileno(),)),
        "length lies": (good[:20] + struct.pack(">I", 1) + good[24:], (tcp.fileno(),)),
        "not a NEGOTIATE": (handoff.encode(guid, b"\0\0\0\x05hello"), (tcp.fileno(),)),
        "another guid in the frame": (handoff.encode(guid, negotiate_frame(os.urandom(16))), (tcp.fileno(),)),
        "a zero guid": (handoff.encode(bytes(16), negotiate_frame(bytes(16))), (tcp.fileno(),)),
        "too large": (good + b"\0" * (handoff.MAX_HANDED + 16), (tcp.fileno(),)),
    }
    for name, (message, fds) in cases.items():
        assert offer(path, message, fds) == b"", name
    # the refused pipe's copy was closed by the worker: the pipe breaks once ours is closed
    os.close(r)
    with pytest.raises(BrokenPipeError):
        os.write(w, b"x")
    # a peer that connects and says nothing is dropped after a while
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
        s.settimeout(10)
        s.connect(path)
        assert s.recv(16) == b""
    # the workers live on, and serve
    assert {w["worker"]: w["pid"] for w in status_of(server)["workers"]} == pids
    c = connect(port, os.urandom(16))
    assert logged_on(c)
    c.close()
    for sock in (listener, udp, elsewhere, tcp, unix_a, unix_b):
        sock.close()
    os.close(w)
    assert "hand-off socket" in server["log"].read_text()


class Host:
    """What a hand-off socket asks of its worker's Server: its ports, whether it takes a
    connection now, and taking it (recorded here)."""

    def __init__(self, port: int):
        self.ports = {port}
        self.adopted: list = []

    def refusal(self, sock):
        return None

    def adopt(self, sock, peer, guid, data):
        self.adopted.append((sock, guid, data))


def test_the_exchange_hands_a_connection_over_or_leaves_it(tmp_path):
    """Two hand-off sockets in one process, real TCP connections: a committed hand-off moves
    the stream (the giver's descriptor closed, the receiver's serving); one not committed
    leaves it with the giver; one to a worker that is not there fails at once."""
    import asyncio
    guid = os.urandom(16)
    frames = negotiate_frame(guid)

    async def main():
        listener = socket.create_server(("127.0.0.1", 0))
        port = listener.getsockname()[1]

        def pair():
            client = socket.create_connection(("127.0.0.1", port))
            accepted, _ = listener.accept()
            return client, accepted
        host = Host(port)
        receiver = handoff.HandOffs(str(tmp_path), 1, host)
        serving = asyncio.ensure_future(receiver.serve())
        giver = handoff.HandOffs(str(tmp_path), 2, Host(port))
        try:
            client, accepted = pair()
            assert await giver.give(1, accepted, guid, frames)
            accepted.close()
            for _ in range(50):
                if host.adopted:
                    break
                await asyncio.sleep(0.05)
            ((adopted, got_guid, got_frames),) = host.adopted
            assert (got_guid, got_frames) == (guid, frames)
            adopted.sendall(b"from the receiver")
            client.settimeout(5)
            assert client.recv(100) == b"from the receiver"
            adopted.close()
            assert client.recv(100) == b""          # the stream ends with the receiver's copy
            # not committed: the receiver drops its copy; the giver's still serves
            client, accepted = pair()
            loop = asyncio.get_running_loop()
            with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
                s.setblocking(False)
                await loop.sock_connect(s, handoff.socket_path(str(tmp_path), 1))
                s.sendmsg([handoff.encode(guid, frames)],
                          [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [accepted.fileno()]))])
                assert await loop.sock_recv(s, 16) == handoff.ACK
            await asyncio.sleep(0.2)
            assert len(host.adopted) == 1
            accepted.sendall(b"still the giver's")
            assert client.recv(100) == b"still the giver's"
            # a worker that is not there: refused at once, the connection stays
            assert not await giver.give(3, accepted, guid, frames)
            accepted.sendall(b"and still")
            assert client.recv(100) == b"and still"
            # more than MAX_HANDED bytes: not even tried
            assert not await giver.give(1, accepted, guid, frames + b"\0" * handoff.MAX_HANDED)
        finally:
            serving.cancel()
            receiver.close()
            giver.close()
            listener.close()
    asyncio.run(main())


# -- (5) a worker killed: its clients go with it ---------------------------------------------------
def clients_in_store(server) -> dict[bytes, set[int]]:
    import lmdb
    from smbring.server.shared_store import DATABASES
    env = lmdb.open(store_directory(server), readonly=True, max_dbs=len(DATABASES), create=False)
    try:
        db = env.open_db(b"clients", create=False)
        out: dict[bytes, set[int]] = {}
        with env.begin() as txn:
            for key in txn.cursor(db).iternext(values=False):
                out.setdefault(bytes(key[:16]), set()).add(struct.unpack(">H", key[16:18])[0])
        return out
    finally:
        env.close()


def test_a_killed_workers_clients_reconnect_to_a_live_worker(server):
    port, guid = server["port"], os.urandom(16)
    c = connect(port, guid)
    tree = logged_on(c)
    assert tree.open("before.txt", wire.GENERIC_READ | wire.GENERIC_WRITE, wire.FILE_CREATE)
    home = worker_of(server, c)
    assert clients_in_store(server).get(guid) == {home}
    killed = pid_of(server, home)
    os.kill(killed, signal.SIGKILL)
    c.close()
    deadline = time.monotonic() + 10
    while guid in clients_in_store(server) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert guid not in clients_in_store(server)         # gone with its worker
    # the client reconnects at once (the slot restarting): a live worker serves it
    c2 = connect(port, guid)
    tree2 = logged_on(c2)
    assert tree2.open("after.txt", wire.GENERIC_READ | wire.GENERIC_WRITE, wire.FILE_CREATE)
    served_by = worker_of(server, c2)
    assert clients_in_store(server).get(guid) == {served_by}
    c2.close()
    # once its connections are gone (no durable open), the client leaves the store
    deadline = time.monotonic() + 10
    while guid in clients_in_store(server) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert guid not in clients_in_store(server)
    wait_for_workers(server, old_pids=(killed,))
