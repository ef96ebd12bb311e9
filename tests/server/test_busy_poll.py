"""`busy poll` (serve --busy-poll): after an answer the event loop keeps looking for the next
request for the budget, then sleeps. What must hold: it is off unless asked for, bounded in
what it accepts, it stops when the clients stop or slow down (no CPU burnt for an idle or
slow client), and the server answers correctly while it turns.

CPU figures here are correctness bounds (a loop that never stopped turning would burn a whole
CPU), never performance claims: those are `smbring bench smallops --servers
smbring,smbring-busy,smbd`."""
import asyncio
import contextlib
import os
import subprocess
import sys
import time
import uuid

import pytest

from servers import PASSWORD, USER, free_port, smbclient, spawn, stop
from smbring.server.busy_poll import MAX_BUDGET_US, BusyPoll, look_for
from smbring.server.config import ConfigError, load

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICK


# -- the loop's side, on a real event loop ------------------------------------------------------

def test_off_by_default_and_budget_bounds():
    assert BusyPoll().budget == 0
    assert BusyPoll(MAX_BUDGET_US).budget == MAX_BUDGET_US / 1e6
    for bad in (-1, MAX_BUDGET_US + 1):
        with pytest.raises(ValueError):
            BusyPoll(bad)


def run_answers(busy: BusyPoll, answers: int, pause: float) -> int:
    """`answers` answers `pause` seconds apart served through busy.served on a real loop;
    then the loop runs until busy polling has stopped. Returns the turns it took."""
    async def main():
        serve = busy.served(lambda: False)
        for _ in range(answers):
            serve()
            await asyncio.sleep(pause)
        deadline = time.monotonic() + 2
        while busy.turning and time.monotonic() < deadline:
            await asyncio.sleep(0.001)
        assert not busy.turning, "busy polling went on after the budget"
    asyncio.run(main())
    return busy.turns


def test_turns_after_an_answer_then_stops():
    busy = BusyPoll(2000)
    assert run_answers(busy, 1, 0) > 0      # (the loop turned: the budget was spent looking)


def test_budget_zero_never_turns():
    busy = BusyPoll(2000)
    busy.set_budget(0)                      # a reload turned it off
    assert run_answers(busy, 5, 0) == 0


def test_slow_clients_stop_it():
    """Requests further apart than the budget: once their median gap is measured, an answer
    no longer sets the loop turning."""
    busy = BusyPoll(200)
    run_answers(busy, 20, 0.005)
    assert busy.look_after(None) == 0
    before = busy.turns
    busy.served(lambda: False)()            # one more answer: no turning
    assert busy.turning is False and busy.turns == before


def test_several_connections_stop_it():
    """Requests over two connections by turns: the loop never looks for them (several clients
    keep it busy, and looks would take the CPU from them)."""
    busy = BusyPoll(MAX_BUDGET_US)

    async def main():
        one, other = busy.served(lambda: False), busy.served(lambda: False)
        for i in range(40):
            (one if i % 2 else other)()
            await asyncio.sleep(0)
    asyncio.run(main())
    assert busy.look_after(None) == 0


def test_the_look_is_worked_out_per_command_answered():
    """A client that sends its next request at once after some answers and only after a
    while after others (smbclient's mget writes each READ's data to its disk before the
    CLOSE): after the slow ones the loop sleeps at once, after the others it still looks; a
    command not measured yet gets the budget. (The gaps are made here without the event loop
    turning in between, so that a loaded machine cannot stretch the quick ones.)"""
    READ, CLOSE = 8, 6
    busy = BusyPoll(MAX_BUDGET_US)
    budget = MAX_BUDGET_US / 1e6

    async def main():
        for i in range(2 * 16 + 1):
            busy.request_arrived()          # the gap since the last answer, under its command
            command = READ if i % 2 else CLOSE
            busy.answered(command)
            if command == READ:
                time.sleep(2 * budget)      # longer than the budget after every READ
        deadline = time.monotonic() + 2
        while busy.turning and time.monotonic() < deadline:
            await asyncio.sleep(0.001)
    asyncio.run(main())
    assert busy.looks[READ] == 0
    assert 0 < busy.looks[CLOSE] <= budget
    busy.allowed = True         # (whether it looks at all: the machine's load decides that)
    assert busy.look_after(READ) == 0 and busy.look_after(CLOSE) == busy.looks[CLOSE]
    assert busy.look_after(5) == budget
    busy.allowed = False
    assert busy.look_after(CLOSE) == 0 and busy.look_after(5) == 0


def test_the_look_follows_the_median_gap():
    """Twice the median gap, at most the budget, none when the median is over it: requests
    that follow at once get a short look, a gap now and then (a client writing each file it
    got to its disk) does not lengthen it, slow ones get none."""
    us = 1e-6
    assert look_for([20 * us] * 16, 200 * us) == pytest.approx(40 * us)
    assert look_for([50 * us] * 12 + [800 * us] * 4, 200 * us) == pytest.approx(100 * us)
    assert look_for([150 * us] * 16, 200 * us) == pytest.approx(200 * us)
    assert look_for([250 * us] * 9 + [10 * us] * 7, 200 * us) == 0


# -- configuration ------------------------------------------------------------------------------

def test_smb_conf_option(tmp_path):
    share = tmp_path / "s"
    share.mkdir()
    conf = tmp_path / "smb.conf"
    conf.write_text(f"[global]\nbusy poll = 150\n[s]\npath = {share}\n")
    assert load(str(conf)).busy_poll == 150
    conf.write_text(f"[s]\npath = {share}\n")
    assert load(str(conf)).busy_poll == 0
    for bad in ("20000", "-5", "fast", "1.5"):
        conf.write_text(f"[global]\nbusy poll = {bad}\n[s]\npath = {share}\n")
        with pytest.raises(ConfigError, match="busy poll"):
            load(str(conf))


@pytest.mark.parametrize("bad", ["20000", "x", "-1"])
def test_command_line_refuses_out_of_bounds(tmp_path, bad):
    out = subprocess.run([sys.executable, "-m", "smbring.cli", "serve", str(tmp_path), "--busy-poll", bad],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "--busy-poll" in out.stderr


# -- a real server -------------------------------------------------------------------------------

@contextlib.contextmanager
def busy_server(tmp_path, budget_us: int, *serve_args: str):
    """`smbring serve --busy-poll budget_us` of tmp_path/share, and an smbprotocol session
    with it: ({"port", "share", "proc"}, connection, session)."""
    connection = pytest.importorskip("smbprotocol.connection")
    session = pytest.importorskip("smbprotocol.session")
    share = tmp_path / "share"
    share.mkdir()
    proc, port, log = spawn(tmp_path, str(share), "--share", "share", "--busy-poll", str(budget_us), *serve_args)
    conn = connection.Connection(uuid.uuid4(), "127.0.0.1", port)
    try:
        conn.connect()
        sess = session.Session(conn, USER, PASSWORD, require_encryption=False)
        sess.connect()
        yield {"port": port, "share": share, "proc": proc, "log": log}, conn, sess
    finally:
        conn.disconnect(True)
        stop(proc)


def test_answers_correctly_while_turning(tmp_path):
    data = os.urandom(300_000)
    (tmp_path / "up").write_bytes(data)
    with busy_server(tmp_path, 500) as (server, _, _):
        for i in range(20):
            out = smbclient(server, f"put {tmp_path / 'up'} f{i}; get f{i} {tmp_path / 'down'}")
            assert out.returncode == 0, out.stdout + out.stderr
            assert (tmp_path / "down").read_bytes() == data
            assert (server["share"] / f"f{i}").read_bytes() == data


def test_without_io_uring_the_server_says_it_does_not_look(tmp_path):
    """The plain transport (--no-io-uring) answers without the loop's callbacks busy polling
    rides on: the server says so once, at the first connection, and answers all the same."""
    with busy_server(tmp_path, 500, "--no-io-uring") as (server, conn, sess):
        for _ in range(20):
            conn.echo(sid=sess.session_id, credit_request=1)
        text = open(server["log"]).read()
        assert text.count("busy poll = 500: not done, connections are served without io_uring") == 1, text
    (tmp_path / "ring").mkdir()
    with busy_server(tmp_path / "ring", 500) as (server, conn, sess):
        conn.echo(sid=sess.session_id, credit_request=1)
        assert "not done" not in open(server["log"]).read()


def test_idle_after_traffic_costs_nothing(tmp_path):
    """A burst of requests, then nothing: the server's CPU over the next second is that of an
    idle server (a loop that went on turning would take the whole second)."""
    with busy_server(tmp_path, 500) as (server, conn, sess):
        for _ in range(2000):
            conn.echo(sid=sess.session_id, credit_request=1)
        time.sleep(0.05)
        before = cpu_seconds(server["proc"].pid)
        time.sleep(1.0)
        assert cpu_seconds(server["proc"].pid) - before < 0.2


def test_a_slow_client_is_not_waited_for(tmp_path):
    """ECHOs 10 ms apart, to a server whose budget is 2 ms: after the first few the server
    sleeps at once after each answer. Looking for 2 ms after every answer would cost 0.3 s
    over these 150; the server's own work is a small fraction of that."""
    with busy_server(tmp_path, 2000) as (server, conn, sess):
        for _ in range(20):
            conn.echo(sid=sess.session_id, credit_request=1)
            time.sleep(0.01)
        before = cpu_seconds(server["proc"].pid)
        for _ in range(150):
            conn.echo(sid=sess.session_id, credit_request=1)
            time.sleep(0.01)
        assert cpu_seconds(server["proc"].pid) - before < 0.15


@pytest.mark.parametrize("budget", [0, 3000])
def test_the_time_spent_looking_is_a_metric(tmp_path, budget):
    """smbring_busy_poll_seconds_total: what looking cost, for an administrator to weigh;
    nothing while busy polling is off."""
    import urllib.request
    pytest.importorskip("prometheus_client")
    mport = free_port()
    with busy_server(tmp_path, budget, "--metrics", f"127.0.0.1:{mport}") as (_, conn, sess):
        for _ in range(500):
            conn.echo(sid=sess.session_id, credit_request=1)
        time.sleep(0.05)
        body = urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=10).read().decode()
    [looking] = [float(line.split()[-1]) for line in body.splitlines()
                 if line.startswith("smbring_busy_poll_seconds_total")]
    assert (looking > 0) == bool(budget)


def test_reload_turns_it_on_and_off(tmp_path):
    """SIGHUP applies a new `busy poll`: no "takes effect at restart", and the server goes on
    answering through it; an out-of-bounds value fails the reload and changes nothing."""
    from test_smbconf_reload_params import Served
    served = Served(tmp_path, "busy poll = 0", as_accounts=False)
    try:
        for value in ("3000", "0", "500"):
            served.write(f"busy poll = {value}")
            assert "configuration reloaded" in served.reload()
            assert "takes effect at restart" not in served.log_text()
            out = smbclient({"port": served.port}, "ls")
            assert out.returncode == 0, out.stdout + out.stderr
        served.write("busy poll = 20000")
        assert "reload failed" in served.reload()
        out = smbclient({"port": served.port}, "ls")
        assert out.returncode == 0, out.stdout + out.stderr
    finally:
        stop(served.proc)
