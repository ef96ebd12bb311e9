"""srvsvc's administrators' calls with two workers (`smbring serve --workers 2`): an
administrator's NetrFileEnum and NetrSessionEnum list every worker's clients, not only those
of the worker the call reached; NetrFileClose closes an open file another worker holds, and
NetrSessionDel ends sessions on every worker. impacket's srvsvc client, smbclient holding the
files open, one of them on each worker (the other worker stopped while it connects).

Each test fails where a worker answers for its own clients alone."""
import os
import shutil
import signal
import time

import pytest

pytest.importorskip("impacket")

from impacket.dcerpc.v5 import srvs, transport  # noqa: E402
from impacket.smbconnection import SMBConnection  # noqa: E402

from servers import PASSWORD, USER, stop  # noqa: E402
from test_srvsvc_administrators import holding_open  # noqa: E402
from worker_servers import pid_of, start as start_workers, status_of, worker_holding  # noqa: E402

pytestmark = [pytest.mark.skipif(not shutil.which("smbclient"), reason="Samba's smbclient is not installed"),
              pytest.mark.skipif(os.geteuid() != 0, reason="an administrator's session acts as root")]


def held_by_a_worker(server, name: str, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    while True:
        worker = worker_holding(server, name)
        if worker is not None:
            return worker
        assert time.monotonic() < deadline, f"{name} not open on any worker"
        time.sleep(0.2)


def administrator(port: int):
    """An administrator's srvsvc pipe (impacket): (its SMB connection, the DCE/RPC binding)."""
    conn = SMBConnection("127.0.0.1", "127.0.0.1", sess_port=port)
    conn.login(USER, PASSWORD)
    rpc = transport.SMBTransport("127.0.0.1", port, r"\srvsvc", smb_connection=conn).get_dce_rpc()
    rpc.connect()
    rpc.bind(srvs.MSRPC_UUID_SRVS)
    return conn, rpc


def open_files(rpc) -> dict:
    """NetrFileEnum level 3: {path's last name: file id}."""
    answer = srvs.hNetrFileEnum(rpc, srvs.NULL, srvs.NULL, 3)
    return {f["fi3_path_name"][:-1].rpartition("\\")[2]: f["fi3_id"]
            for f in answer["InfoStruct"]["FileInfo"]["Level3"]["Buffer"]}


def session_count(rpc) -> int:
    return len(srvs.hNetrSessionEnum(rpc, srvs.NULL, srvs.NULL, 10)["InfoStruct"]["SessionInfo"]["Level10"]["Buffer"])


@pytest.fixture
def spread(tmp_path):
    """A server of two workers; smbclient holding held-a.txt open on one worker and
    held-b.txt on the other, and an administrator's srvsvc pipe on the second:
    (server, the administrator's binding, the two workers, the holders)."""
    server = start_workers(tmp_path)
    for name in ("held-a.txt", "held-b.txt"):
        (server["share"] / name).write_text("x")
    holders, conn = [], None
    try:
        holders.append(holding_open(server["port"], "held-a.txt"))
        first = held_by_a_worker(server, "held-a.txt")
        pid = pid_of(server, first)
        os.kill(pid, signal.SIGSTOP)        # what connects now reaches the other worker
        try:
            holders.append(holding_open(server["port"], "held-b.txt"))
            conn, rpc = administrator(server["port"])
            second = held_by_a_worker(server, "held-b.txt")
        finally:
            os.kill(pid, signal.SIGCONT)
        assert first != second
        yield server, rpc, (first, second), holders
    finally:
        for holder in holders:
            holder.kill()
            holder.wait()
        if conn is not None:
            conn.close()
        stop(server["proc"])


def test_the_lists_are_every_workers(spread):
    _server, rpc, _workers, _holders = spread
    files = open_files(rpc)
    assert {"held-a.txt", "held-b.txt"} <= set(files), files
    assert len(set(files.values())) == len(files)       # ids unique across the workers
    assert session_count(rpc) >= 3          # the two holders' and the administrator's own


def test_a_file_another_worker_holds_is_closed(spread):
    server, rpc, (first, _second), _holders = spread
    files = open_files(rpc)
    srvs.hNetrFileClose(rpc, files["held-a.txt"])       # held by the first worker
    assert worker_holding(server, "held-a.txt") is None
    assert "held-a.txt" not in open_files(rpc) and "held-b.txt" in open_files(rpc)
    with pytest.raises(srvs.DCERPCSessionError):
        srvs.hNetrFileClose(rpc, files["held-a.txt"])   # closed already: not found


def test_sessions_are_ended_on_every_worker(spread):
    server, rpc, _workers, _holders = spread
    srvs.hNetrSessionDel(rpc, srvs.NULL, USER + "\x00")
    assert session_count(rpc) == 1          # the administrator's own is spared
    assert sum(len(c["sessions"]) for c in status_of(server)["connections"]) == 1   # on both workers


def test_a_worker_that_does_not_answer_is_left_out_in_bounded_time(spread):
    """A stopped worker: the list comes without its clients after the bound on its answer
    (server.activity.PEER_TIMEOUT, 2 s), not never; the worker's own clients are listed."""
    server, rpc, (first, _second), _holders = spread
    pid = pid_of(server, first)
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        files = open_files(rpc)
        took = time.monotonic() - started
    finally:
        os.kill(pid, signal.SIGCONT)
    assert "held-b.txt" in files and "held-a.txt" not in files
    assert 1.5 < took < 10, took
    assert {"held-a.txt", "held-b.txt"} <= set(open_files(rpc))     # back once it answers
