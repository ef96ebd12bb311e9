"""Prometheus metrics with `smbring serve --workers N`: one address for every worker's
metrics, each sample labelled with its worker, the supervisor's own figures beside them; a
scraper that never finishes its request does not hold the supervisor (which must go on
restarting dead workers); a metrics address the server cannot have stops it from starting."""
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

pytest.importorskip("prometheus_client")

import worker_servers  # noqa: E402
from servers import free_port, smbclient, stop  # noqa: E402
from worker_servers import pid_of, wait_for_workers  # noqa: E402


def start(tmp_path) -> dict:
    mport = free_port()
    server = worker_servers.start(tmp_path, 2, "--metrics", f"127.0.0.1:{mport}")
    (server["share"] / "f").write_bytes(os.urandom(1 << 20))
    return {**server, "metrics": mport}


@pytest.fixture
def server(tmp_path):
    server = start(tmp_path)
    yield server
    stop(server["proc"])


def scrape(server, timeout: float = 10) -> dict[str, float]:
    body = urllib.request.urlopen(f"http://127.0.0.1:{server['metrics']}/metrics", timeout=timeout).read()
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in body.decode().splitlines() if line and not line.startswith("#")}


def summed(values: dict[str, float], prefix: str) -> float:
    return sum(value for name, value in values.items() if name.startswith(prefix))


def test_every_workers_metrics_at_one_address(server):
    for _ in range(4):      # (whichever worker takes each connection)
        assert smbclient(server, "get f /dev/null").returncode == 0
    values = scrape(server)
    assert values["smbring_workers_running"] == 2
    for worker in ("1", "2"):
        assert values[f'smbring_worker_up{{worker="{worker}"}}'] == 1
        assert f'smbring_connections_open{{worker="{worker}"}}' in values
        assert values[f'smbring_worker_restarts_total{{worker="{worker}"}}'] == 0
    assert summed(values, "smbring_read_bytes_total{") >= 4 << 20
    reads = [name for name in values if name.startswith('smbring_requests_total{command="read"')]
    assert reads and all('worker="' in name for name in reads)


def test_a_restarted_worker_is_counted(server):
    old = pid_of(server, 1)
    os.kill(old, signal.SIGKILL)
    wait_for_workers(server, old_pids=(old,))
    values = scrape(server)
    assert values['smbring_worker_restarts_total{worker="1"}'] == 1
    assert values['smbring_worker_restarts_total{worker="2"}'] == 0
    assert values["smbring_workers_running"] == 2


def test_scrapers_that_never_finish_do_not_hold_the_supervisor(server):
    """Thirty connections that send half a request and then nothing: a real scrape is still
    answered at once, and a worker killed meanwhile is restarted (the supervisor's loop
    goes on); the idle connections are closed."""
    idle = []
    try:
        for _ in range(30):
            s = socket.create_connection(("127.0.0.1", server["metrics"]))
            s.sendall(b"GET /metrics HTTP/1.1\r\n")
            idle.append(s)
        started = time.monotonic()
        assert scrape(server, timeout=5)["smbring_workers_running"] == 2
        assert time.monotonic() - started < 3
        old = pid_of(server, 2)
        os.kill(old, signal.SIGKILL)
        wait_for_workers(server, old_pids=(old,))
        closed = 0
        for s in idle:          # past the request deadline, every one of them is closed
            s.settimeout(10)
            try:
                closed += s.recv(1) == b""
            except ConnectionResetError:
                closed += 1
        assert closed == len(idle)
    finally:
        for s in idle:
            s.close()


def test_anything_but_get_metrics_is_not_found(server):
    with socket.create_connection(("127.0.0.1", server["metrics"]), timeout=5) as s:
        s.sendall(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(1 << 16).startswith(b"HTTP/1.1 404 ")


def serve_fails(tmp_path, *args: str) -> subprocess.CompletedProcess:
    share = tmp_path / "share"
    share.mkdir(exist_ok=True)
    env = dict(os.environ, SMBRING_PASSDB=str(tmp_path / "passdb"))
    cli = [sys.executable, "-m", "smbring.cli"]
    subprocess.run(cli + ["user", "add", "alice", "--password-stdin"], input="Secret-pw1\n", text=True,
                   check=True, env=env, capture_output=True)
    return subprocess.run(cli + ["serve", str(share), "--listen", f"127.0.0.1:{free_port()}", *args],
                          env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_metrics_address_in_use_stops_the_server(tmp_path, workers):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        r = serve_fails(tmp_path, "--workers", workers, "--metrics", f"127.0.0.1:{port}",
                        "--control-socket", str(tmp_path / "control"))
    assert r.returncode == 2
    assert f"smbring serve: metrics: cannot listen on 127.0.0.1:{port}: Address already in use" in r.stderr
    assert "Traceback" not in r.stderr


def test_metrics_of_workers_without_a_control_socket_stop_the_server(tmp_path):
    r = serve_fails(tmp_path, "--workers", "2", "--metrics", f"127.0.0.1:{free_port()}",
                    "--control-socket", "none")
    assert r.returncode == 2
    assert "metrics with more than one worker need the control socket" in r.stderr
