"""`smbring bench smallops`: its parsing, its records, and a quick real run against both servers."""
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

from servers import free_port, searchable_to
from smbring.bench import smallops

# what smbtorture 4.17 prints: progress lines end in \r, the whole run's figure comes last
ECHO_OUTPUT = (
    "Opening 1 connections\nOpened 1 connections with qdepth=1 => 1 loops\nRunning for 2 seconds\n"
    "1.00 second: echo[num/s=15000,avslat=0.000060,minlat=0.000030,maxlat=0.001000]      \r"
    "2.00 second: echo[num/s=15890,avslat=0.000061,minlat=0.000030,maxlat=0.002000]\n2.00 seconds\n")
OPEN_OUTPUT = (
    "2.00 second: open[num/s=4401,avslat=0.000200,minlat=0.000100,maxlat=0.001000] "
    "close[num/s=4400,avslat=0.000100,minlat=0.000050,maxlat=0.001000]\n")


def test_torture_rate_is_the_last_report():
    assert smallops.parse_torture_rate("smb2.bench.echo", ECHO_OUTPUT) == 15890
    assert smallops.parse_torture_rate("smb2.bench.path-contention-shared", OPEN_OUTPUT) == 4401


def test_torture_rate_of_a_failed_run_is_an_error():
    failed = "failure: echo [\nloop->error was NT_STATUS_CONNECTION_RESET\n]\n"
    with pytest.raises(ValueError):
        smallops.parse_torture_rate("smb2.bench.echo", failed)
    with pytest.raises(ValueError):    # the other test's figure is not this one's
        smallops.parse_torture_rate("smb2.bench.echo", OPEN_OUTPUT)


def test_workloads():
    ws = smallops.parse_workloads("echo-4x8, create-close-1x1")
    assert [(w.name, w.nprocs, w.qdepth, w.workers) for w in ws] == [
        ("echo-4x8", 4, 8, 32), ("create-close-1x1", 1, 1, 1)]
    assert [w.name for w in smallops.parse_workloads(",".join(smallops.WORKLOADS))] == list(smallops.WORKLOADS)
    for bad in ("echo", "", "echo-1x1,nope"):
        with pytest.raises(ValueError):
            smallops.parse_workloads(bad)


def test_records_are_medians_and_ratios_medians_of_run_ratios():
    ws = smallops.parse_workloads("echo-1x1")
    results = {("echo-1x1", "smbring"): [(100.0, 40.0), (300.0, 20.0), (200.0, 30.0)],
               ("echo-1x1", "smbd"): [(200.0, 10.0), (200.0, 10.0), (100.0, 20.0)]}
    summary = smallops.summarize(results, ws, ["smbring", "smbd"], {("echo-1x1", "smbd"): 1})
    assert summary["records"] == [
        {"workload": "echo-1x1", "server": "smbring", "ops_per_s": 200.0, "server_cpu_us_per_op": 30.0,
         "workers": 1, "runs": 3, "failed_runs": 0},
        {"workload": "echo-1x1", "server": "smbd", "ops_per_s": 200.0, "server_cpu_us_per_op": 10.0,
         "workers": 1, "runs": 3, "failed_runs": 1}]
    # per run: ops 0.5, 1.5, 2.0; CPU 4.0, 2.0, 1.5
    assert summary["ratios"] == {"echo-1x1_ops_vs_smbd": 1.5, "echo-1x1_cpu_vs_smbd": 2.0}


def test_busy_polling_is_compared_with_smbd_too():
    ws = smallops.parse_workloads("echo-1x1")
    results = {("echo-1x1", "smbring-busy"): [(300.0, 40.0), (400.0, 30.0), (500.0, 20.0)],
               ("echo-1x1", "smbd"): [(200.0, 10.0), (200.0, 10.0), (100.0, 20.0)]}
    summary = smallops.summarize(results, ws, ["smbring-busy", "smbd"])
    # per run: ops 1.5, 2.0, 5.0; CPU 4.0, 3.0, 1.0
    assert summary["ratios"] == {"echo-1x1_ops_busy_vs_smbd": 2.0, "echo-1x1_cpu_busy_vs_smbd": 3.0}


def test_the_clients_cpu_is_a_median_too():
    ws = smallops.parse_workloads("echo-1x1")
    results = {("echo-1x1", "smbring"): [(100.0, 40.0, 7.0), (300.0, 20.0, 5.0), (200.0, 30.0, 9.0)]}
    [record] = smallops.summarize(results, ws, ["smbring"])["records"]
    assert record["client_cpu_us_per_op"] == 7.0


def test_the_servers_kernel_time_is_a_median_too():
    ws = smallops.parse_workloads("echo-1x1")
    results = {("echo-1x1", "smbring"): [(100.0, 40.0, 7.0, 12.0), (300.0, 20.0, 5.0, 8.0),
                                         (200.0, 30.0, 9.0, 10.0)]}
    [record] = smallops.summarize(results, ws, ["smbring"])["records"]
    assert (record["client_cpu_us_per_op"], record["server_sys_us_per_op"]) == (7.0, 10.0)


def test_the_cli_refuses_what_it_cannot_run(tmp_path):
    run = subprocess.run([sys.executable, "-m", "smbring.cli", "bench", "smallops", "--workloads", "nope",
                          "--dir", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "unknown workloads" in run.stdout + run.stderr
    run = subprocess.run([sys.executable, "-m", "smbring.cli", "bench", "smallops", "--runs", "0",
                          "--dir", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2


def test_placements_name_the_cpus_of_server_and_clients():
    cpus = sorted(os.sched_getaffinity(0))
    assert smallops.placement_cpus("any") == (None, None)
    assert smallops.placement_cpus("same") == ({cpus[0]}, {cpus[0]})
    if len(cpus) > 1:
        assert smallops.placement_cpus("split") == ({cpus[0]}, {cpus[1]})


def test_the_clients_files_go_to_a_tmpfs_where_there_is_one(tmp_path):
    """The clients' own files (mget's copies) are neither server's cost: by default they go
    to /dev/shm where that is a tmpfs, else to the temporary directory; --client-dir decides."""
    mounted = {}
    with open("/proc/self/mounts") as mounts:
        for line in mounts:
            fields = line.split()
            mounted[fields[1]] = fields[2]
    default = smallops.client_scratch(None)
    try:
        expected = "/dev/shm" if mounted.get("/dev/shm") == "tmpfs" and os.access("/dev/shm", os.W_OK) \
            else tempfile.gettempdir()
        assert os.path.dirname(default) == expected and os.path.isdir(default)
    finally:
        os.rmdir(default)
    chosen = smallops.client_scratch(str(tmp_path))
    assert os.path.dirname(chosen) == str(tmp_path) and os.path.isdir(chosen)


def test_a_split_placement_needs_two_cpus(tmp_path):
    """On one CPU the benchmark refuses --placement split rather than measure something else."""
    one = min(os.sched_getaffinity(0))
    run = subprocess.run([sys.executable, "-m", "smbring.cli", "bench", "smallops", "--placement", "split",
                          "--workloads", "echo-1x1", "--dir", str(tmp_path)], capture_output=True, text=True,
                         timeout=60, preexec_fn=lambda: os.sched_setaffinity(0, {one}))
    assert run.returncode == 2 and "needs two CPUs" in run.stderr


def test_pinning_reaches_every_thread_of_the_servers_process_group():
    """A process group's leader, a child it started and that child's second thread are all
    placed; a process outside the group is not."""
    cpu = min(os.sched_getaffinity(0))
    script = ("import os, subprocess, sys, threading, time\n"
              "subprocess.Popen([sys.executable, '-c', 'import threading, time; "
              "threading.Thread(target=time.sleep, args=(30,)).start(); time.sleep(30)'])\n"
              "time.sleep(30)\n")
    group = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    outsider = subprocess.Popen(["sleep", "30"])
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:      # until the child's second thread runs
            tasks = [(p, t) for p in os.listdir("/proc") if p.isdigit()
                     for t in _tasks(p) if _pgid(p) == group.pid]
            if len(tasks) >= 3:
                break
            time.sleep(0.05)
        assert smallops.pin_processes(group.pid, {cpu}) >= 3
        for _pid, task in tasks:
            assert os.sched_getaffinity(int(task)) == {cpu}
        assert os.sched_getaffinity(outsider.pid) == os.sched_getaffinity(0)
    finally:
        os.killpg(group.pid, 9)
        outsider.kill()
        group.wait()
        outsider.wait()


def _tasks(pid: str) -> list[str]:
    try:
        return os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return []


def _pgid(pid: str) -> int:
    try:
        return os.getpgid(int(pid))
    except ProcessLookupError:
        return -1


@pytest.mark.integration
@pytest.mark.skipif(os.geteuid() != 0, reason="smbd needs root (a Unix user for its password database)")
@pytest.mark.skipif(not all(shutil.which(t) for t in ("smbd", "smbtorture", "smbclient")),
                    reason="needs Samba's smbd, smbtorture and smbclient")
def test_quick_run_measures_every_workload_on_both_servers(tmp_path):
    """The whole benchmark in its smoke mode (1 s per smbtorture run, few files): every
    workload ran on both servers and gave a figure."""
    searchable_to(tmp_path / "share")     # both servers act as the benchmark's user
    run = subprocess.run([sys.executable, "-m", "smbring.cli", "bench", "smallops", "--quick", "--json",
                          "--dir", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    summary = json.loads(run.stdout)
    got = {(r["workload"], r["server"]): r for r in summary["records"]}
    assert set(got) == {(w, s) for w in smallops.WORKLOADS for s in ("smbring", "smbd")}
    for (workload, _), r in got.items():
        assert set(r) == {"workload", "server", "ops_per_s", "server_cpu_us_per_op", "workers", "runs",
                          "failed_runs", "client_cpu_us_per_op", "server_sys_us_per_op"}
        assert r["ops_per_s"] > 0 and r["server_cpu_us_per_op"] >= r["server_sys_us_per_op"] >= 0
        assert r["runs"] == 1
        assert r["client_cpu_us_per_op"] > 0        # (smbtorture's and smbclient's own time)
        assert r["workers"] == smallops.WORKLOADS[workload].workers
    assert set(summary["ratios"]) == {f"{w}_{k}_vs_smbd" for w in smallops.WORKLOADS for k in ("ops", "cpu")}


def test_quick_run_with_busy_polling(tmp_path):
    """smbring-busy (serve --busy-poll) runs and is compared with smbd."""
    searchable_to(tmp_path / "share")
    run = subprocess.run([sys.executable, "-m", "smbring.cli", "bench", "smallops", "--quick", "--json",
                          "--servers", "smbring-busy,smbd", "--workloads", "echo-1x1,copy-get",
                          "--dir", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    summary = json.loads(run.stdout)
    assert {(r["workload"], r["server"]) for r in summary["records"]} == {
        (w, s) for w in ("echo-1x1", "copy-get") for s in ("smbring-busy", "smbd")}
    assert all(r["ops_per_s"] > 0 for r in summary["records"])
    assert set(summary["ratios"]) == {f"{w}_{k}_busy_vs_smbd" for w in ("echo-1x1", "copy-get")
                                      for k in ("ops", "cpu")}


def test_other_loops_ratios_pair_each_with_asyncios():
    ws = smallops.parse_workloads("echo-1x1")
    results = {("echo-1x1", "smbring"): [(100.0, 40.0), (200.0, 30.0)],
               ("echo-1x1", "smbring-ring"): [(150.0, 20.0), (200.0, 33.0)],
               ("echo-1x1", "smbring-uvloop"): [(200.0, 20.0), (300.0, 15.0)]}
    summary = smallops.summarize(results, ws, ["smbring", "smbring-ring", "smbring-uvloop"])
    assert [r["server"] for r in summary["records"]] == ["smbring", "smbring-ring", "smbring-uvloop"]
    # per run: ring's ops 1.5, 1.0, CPU 0.5, 1.1; uvloop's ops 2.0, 1.5, CPU 0.5, 0.5
    assert summary["ratios"] == {"echo-1x1_ops_ring_vs_asyncio": 1.25, "echo-1x1_cpu_ring_vs_asyncio": 0.8,
                                 "echo-1x1_ops_uvloop_vs_asyncio": 1.75, "echo-1x1_cpu_uvloop_vs_asyncio": 0.5}


@pytest.mark.skipif(platform.machine() != "x86_64", reason="io_uring_enter's number is x86_64's")
def test_smbring_ring_server_waits_in_io_uring_enter(tmp_path):
    """The benchmark's smbring-ring server really runs on the ring loop (its idle main thread
    sits in io_uring_enter, 426, not in epoll_wait), and the environment is left as it was."""
    share = tmp_path / "share"
    share.mkdir()
    before = os.environ.get(smallops.EVENT_LOOP_ENV)
    server = smallops.SmbringOnLoop("ring", str(share), free_port(), str(tmp_path / "state"))
    try:
        assert os.environ.get(smallops.EVENT_LOOP_ENV) == before
        for _ in range(50):
            with open(f"/proc/{server.proc.pid}/syscall") as f:
                number = f.read().split()[0]
            if number == "426":
                break
            time.sleep(0.05)
        assert number == "426"
    finally:
        server.stop()


def test_smbring_uvloop_server_runs_on_uvloop(tmp_path):
    """The benchmark's smbring-uvloop server really runs on uvloop (its process has uvloop's
    loop module loaded, which asyncio's loop never imports)."""
    share = tmp_path / "share"
    share.mkdir()
    server = smallops.SmbringOnLoop("uvloop", str(share), free_port(), str(tmp_path / "state"))
    try:
        assert server.name == "smbring-uvloop"
        with open(f"/proc/{server.proc.pid}/maps") as f:
            assert "/uvloop/loop." in f.read()
    finally:
        server.stop()


def test_core_costs_measure_an_echo_and_a_create_close_pair():
    """`bench smallops --core`: every part measured, a CREATE + CLOSE pair (through the
    server's own tables, the workers' store, after an idle wait, and as one compound, each
    of its answers a success) dearer than an ECHO."""
    from smbring.bench.smallops import core_costs
    costs = core_costs(rounds=1, n=400)
    assert all(v > 0 for v in costs.values())
    assert costs["create_close_root"] > costs["core_total"]
    assert costs["create_close_root_store"] > costs["core_total"]
    assert costs["create_close_root_after_idle"] > costs["core_total"]
    assert costs["create_close_root_compound"] > costs["core_total"]
    # (a pair runs thousands of Python instructions in a hundred-odd calls)
    assert costs["create_close_root_instructions"] > 1000 and costs["create_close_root_calls"] > 20


def test_instruction_count_counts_the_code_run_inside_it_and_nothing_else():
    """InstructionCount: the same code counts the same each time, twice the calls count
    twice as many, and what runs outside the `with` counts nothing."""
    from smbring.bench.smallops import InstructionCount, create_close_instructions

    def work(k: int) -> int:
        total = 0
        for i in range(k):
            total += i
        return total

    def counted(calls: int) -> InstructionCount:
        counter = InstructionCount()
        with counter:
            for _ in range(calls):
                work(50)
        work(1000)         # (after: not counted)
        return counter

    ten, twenty = counted(10), counted(20)
    assert (ten.instructions, ten.calls) == (counted(10).instructions, counted(10).calls)
    assert twenty.calls - ten.calls == 10
    per_call = (twenty.instructions - ten.instructions) / 10
    assert 150 < per_call < 1000        # (50 turns of a loop of a few instructions each)
    assert create_close_instructions(100) == create_close_instructions(100)


def test_a_server_is_waited_for_on_its_own_socket_not_on_another_programs():
    """A port free when chosen but taken by another program first (a benchmark run beside):
    the server that cannot bind it is reported, and a server that does not listen yet is not
    taken for the program that does."""
    import socket
    from smbring.bench.smbclient import wait_port
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        binder = subprocess.Popen([sys.executable, "-c", f"import socket; socket.socket().bind(('127.0.0.1', {port}))"],
                                  stderr=subprocess.DEVNULL)
        with pytest.raises(RuntimeError, match="exited .* before it listened"):
            wait_port(port, timeout=10, proc=binder)
        sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
        try:
            with pytest.raises(RuntimeError, match="nothing listens"):
                wait_port(port, timeout=1, proc=sleeper)
        finally:
            sleeper.kill()
            sleeper.wait()
    listener = subprocess.Popen([sys.executable, "-c", f"import socket, time; s = socket.socket(); "
                                 f"s.bind(('127.0.0.1', {port})); s.listen(); time.sleep(30)"])
    try:
        wait_port(port, timeout=10, proc=listener)
    finally:
        listener.kill()
        listener.wait()


@pytest.mark.integration
@pytest.mark.skipif(os.geteuid() != 0, reason="the benchmark's smbring acts as a Unix user")
@pytest.mark.skipif(not all(shutil.which(t) for t in ("smbtorture", "smbclient")),
                    reason="needs Samba's smbtorture and smbclient")
@pytest.mark.parametrize("protection", ["none", "sign", "encrypt"])
def test_the_protection_asked_reaches_both_clients_sessions(tmp_path, protection):
    """`--protection sign` and `encrypt` make smbtorture's and smbclient's sessions signed or
    sealed, as the server itself reports them (smbring status); `none` leaves both clients'
    sessions neither (as neither server asks for it)."""
    from smbring.bench.smbclient import Smbring
    from smbring.server import control
    share = tmp_path / "share"
    share.mkdir()
    searchable_to(share)
    os.chmod(share, 0o777)
    os.chmod(tmp_path, 0o755)
    server = Smbring(str(share), free_port(), str(tmp_path / "state"))
    workload = smallops.WORKLOADS["create-close-1x1"]
    clients = {"smbtorture": smallops.torture_command(server.port, workload, 3, protection),
               # (its commands from a pipe: its session stays while the server is asked)
               "smbclient": smallops.smbclient_command(server.port, None, protection)}
    try:
        for name, command in clients.items():
            client = subprocess.Popen(command, cwd=str(tmp_path), stdin=subprocess.PIPE,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                client.stdin.write(b"ls\n")
                client.stdin.flush()
                sessions, deadline = [], time.monotonic() + 10
                while not sessions and time.monotonic() < deadline:
                    time.sleep(0.2)
                    status = control.ask(str(tmp_path / "state" / "run" / "control"))
                    sessions = [s for c in status["connections"] for s in c["sessions"]]
                assert sessions, f"{name}: no session seen"
                for s in sessions:
                    # (a client that seals may ask for signing too: what sealing supersedes)
                    if protection != "encrypt":
                        assert (s["signing"] is not None) == (protection == "sign"), (name, s)
                    assert (s["encryption"] is not None) == (protection == "encrypt"), (name, s)
            finally:
                client.stdin.close()        # (smbclient's end of input: it logs off)
                assert client.wait(timeout=30) == 0, name
    finally:
        server.stop()
