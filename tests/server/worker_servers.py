"""`smbring serve --workers N` for the tests: a server started with its control socket in a
run directory of its own and waited for until every worker answers `smbring status`, and
what that status says (which worker, which process)."""
import time

from servers import spawn, stop


def status_of(server) -> dict:
    from smbring.server.control import ask
    return ask(server["control"])


def pid_of(server, worker: int) -> int:
    return next(w["pid"] for w in status_of(server)["workers"] if w["worker"] == worker)


def worker_holding(server, name: str) -> int | None:
    """The worker whose connection has the file `name` open (None: nobody's)."""
    for c in status_of(server)["connections"]:
        if any(o["name"] == name for o in c["opens"]):
            return c["worker"]
    return None


def wait_for_workers(server, old_pids=()) -> None:
    """Until every worker answers status (none of them one of `old_pids`: restarted)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            workers = status_of(server)["workers"]
            if all(w.get("pid") and "error" not in w and w["pid"] not in old_pids for w in workers):
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError("the workers did not start")


def start(tmp_path, workers: int = 2, *serve_args: str, second_user: bool = False) -> dict:
    """A server of tmp_path/share with `workers` worker processes (1: one process), its
    control socket in tmp_path/run, and `serve_args` more for `smbring serve`; stop it with
    servers.stop(server["proc"]). `second_user`: USER2 logs on too (servers.spawn)."""
    share = tmp_path / "share"
    share.mkdir()
    (tmp_path / "run").mkdir(mode=0o700)
    control = str(tmp_path / "run" / "control")
    more = ["--workers", str(workers)] if workers > 1 else []
    proc, port, log = spawn(tmp_path, str(share), "--share", "share", *more,
                            "--control-socket", control, "--shutdown-timeout", "2", *serve_args,
                            second_user=second_user)
    server = {"port": port, "share": share, "proc": proc, "log": log, "control": control,
              "run": tmp_path / "run", "workers": workers}
    try:
        if workers > 1:
            wait_for_workers(server)
    except BaseException:
        stop(proc)
        raise
    return server


def worker_of(server, c, wait: float = 5.0) -> int:
    """The worker serving a raw client's connection (by its port, in `smbring status`)."""
    me = "127.0.0.1:%d" % c.sock.getsockname()[1]
    deadline = time.monotonic() + wait
    while True:
        for conn in status_of(server)["connections"]:
            if conn["client"] == me:
                return conn["worker"]
        assert time.monotonic() < deadline, f"{me} not in status"
        time.sleep(0.05)
