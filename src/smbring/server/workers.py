"""``smbring serve --workers N``: a supervisor process and N worker processes.

The supervisor binds the listening sockets, prepares the shared store (server.shared_store)
and forks the workers; each worker is today's whole server (one event loop, its own
io_uring) serving its share of the connections. The supervisor then only watches:

- a worker that dies is logged, its entries in the shared store are removed (its opens,
  share modes, byte-range locks, tree connects and connections: its clients' connections
  ended with it), and a new worker takes its place (after a pause that grows while workers
  keep dying at once, so that a broken configuration does not spin);
- SIGHUP is passed to every worker (each reloads the configuration); SIGTERM and SIGINT too
  (each stops gracefully), and the supervisor waits for them, killing any left after the
  shutdown timeout and a margin;
- ``smbring status`` asks the supervisor's control socket, which asks each worker's own
  (the same path with ``.worker<N>`` appended) and answers with every worker's connections,
  each marked with its worker; a Prometheus scrape is gathered the same way
  (server.worker_metrics).

How connections reach workers: every worker accepts on the same listening sockets, which
the supervisor bound (or systemd passed) and keeps open. The kernel hands each connection to
one worker that is waiting in accept, so a worker busy with a long request, or one being
replaced, takes none while the others take them all; a worker that dies leaves no
connection waiting in a backlog of its own. Measured against one SO_REUSEPORT socket per
worker (two asyncio processes on loopback, 2026-12-01): both spread sequential connections
evenly (216/184 and 203/197 of 400), but with one worker blocked 20 ms per connection, the
shared socket gave 199 of 200 connections to the idle worker (8,697 connections/s) where
SO_REUSEPORT's hash still gave the blocked one half (93 connections/s). The price is that
every idle worker wakes for each new connection and all but one find nothing to accept: a
few microseconds per worker, against a logon's milliseconds.

Oplocks and leases are shared (server.shared_oplocks): their state is in the store, and a
worker tells another "break your client's oplock", "a CREATE waiting on this file may go on"
through a datagram socket per worker in the store's directory (server.wakeups); after a
worker's death the supervisor removes its oplocks and leases with its opens and wakes the
others.

A client's connections all reach one worker (server.handoff): each connection's SMB2
NEGOTIATE names its client (ClientGuid), the store records which worker serves that client,
and a worker that receives a connection of another worker's client passes the socket to it
over that worker's hand-off socket (``handoff-<worker>`` in the store's directory). So a
second channel binds to its session (multichannel), a reconnect finds its durable or
resilient open, and a PreviousSessionId reaches the session it names. A reconnect under
another ClientGuid may land on another worker: what it names is asked of the others over the
same sockets (server.handoff's requests: the session its PreviousSessionId names is ended by
its worker, its durable open handed over, server.moves; an AppInstanceId's earlier opens
closed wherever they are).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import select
import signal
import socket
import time
import uuid

from smbring.server import shared_store

log = logging.getLogger("smbring.server")

KILL_MARGIN = 10.0          # seconds past the shutdown timeout before a worker is killed
RESTART_PAUSE_FIRST, RESTART_PAUSE_MOST = 0.5, 30.0
QUICK_DEATH = 5.0           # a worker dying sooner than this after its start is a crash loop
STATUS_TIMEOUT = 5.0        # a worker answering status slower than this is reported so
METRICS_TIMEOUT = 2.0       # a worker answering a scrape slower than this is left out of it


BREAK_TIMEOUT_VARIABLE = "SMBRING_BREAK_TIMEOUT"     # another break timeout, in seconds (for tests)


def break_timeout(default: float) -> float:
    try:
        value = float(os.environ.get(BREAK_TIMEOUT_VARIABLE) or default)
    except ValueError:
        return default
    return value if 0 < value <= default else default


@dataclasses.dataclass
class WorkerSetup:
    """What a worker process is given: who it is and where the shared store is."""

    worker: int                 # 1..N
    generation: int             # how many times this worker's slot was started before
    store_directory: str
    server_guid: bytes          # every worker announces the same

    def backends(self, store, as_server=None) -> object:
        """The ServerState tables over the store (the protocol core's interfaces);
        `as_server`: the server's context for acting as itself (wake-ups are its work)."""
        import asyncio

        from smbring.server.shared_store import (SharedByteRangeLocks, SharedDeletePending,
                                                 SharedOpenPaths, SharedShareModes,
                                                 SharedTreeCounts)
        from smbring.server import wakeups
        from smbring.server.shared_oplocks import SharedOplocks
        from smbring.smb.oplocks import BREAK_TIMEOUT
        from smbring.smb.server_state import Backends, SessionRegistry
        share_modes = SharedShareModes(store)
        channel = wakeups.Channel(self.store_directory, self.worker, as_server)
        oplocks = SharedOplocks(store, channel, asyncio.get_running_loop,
                                timeout=break_timeout(BREAK_TIMEOUT))

        def tell_delete_pending(worker: int, key: tuple) -> None:
            # sent once the transaction that marked it is committed, so the store says so
            asyncio.get_running_loop().call_soon(
                channel.send, worker, wakeups.Message(wakeups.DELETE_PENDING, file=key))

        def tell_renamed(worker: int, key: tuple) -> None:
            asyncio.get_running_loop().call_soon(       # (likewise)
                channel.send, worker, wakeups.Message(wakeups.RENAMED, file=key))
        return Backends(
            oplocks=oplocks,
            share_modes=share_modes,
            locks=SharedByteRangeLocks(
                store, lambda delay, callback: asyncio.get_running_loop().call_later(delay, callback)),
            delete_pending=SharedDeletePending(store, share_modes, tell=tell_delete_pending),
            trees=SharedTreeCounts(store),
            open_paths=SharedOpenPaths(store, tell=tell_renamed),
            sessions=SessionRegistry(self.server_guid, worker=self.worker, generation=self.generation),
            atomic=store.atomic)


@dataclasses.dataclass
class Worker:
    slot: int
    pid: int = 0
    started: float = 0.0
    generation: int = 0
    restarts: int = 0
    restart_at: float | None = None     # a restart waiting for its pause to end
    pause: float = RESTART_PAUSE_FIRST
    # its dead predecessor's entries are still in the shared store (their removal failed):
    # the slot is not started again until they are gone, else they would count as its own
    cleanup_due: bool = False


class Supervisor:
    """Forks, watches and stops the workers (see the module's description).

    `serve(setup, sockets)` is run in each worker process and returns its exit status;
    nothing of the supervisor's runs there after the fork."""

    def __init__(self, count: int, listeners: list[socket.socket], serve, *,
                 store_directory: str, control_path: str | None, shutdown_timeout: float,
                 reopen_log=None, metrics_listener: socket.socket | None = None):
        self.serve = serve
        self.reopen_log = reopen_log        # SIGHUP: the supervisor's own log (rotation)
        self.store_directory = store_directory
        self.control_path = control_path
        self.shutdown_timeout = shutdown_timeout
        self.server_guid = uuid.uuid4().bytes
        self.listeners = listeners      # every worker accepts on them
        self.workers = [Worker(slot=i + 1) for i in range(count)]
        self.stopping = False
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._control: socket.socket | None = None
        self._metrics = None        # a worker_metrics.MetricsEndpoint when metrics are on
        if metrics_listener is not None:
            from smbring.server.worker_metrics import MetricsEndpoint
            self._metrics = MetricsEndpoint(metrics_listener, self._gather_metrics)
        self._signals: list[int] = []
        self._stop_deadline = float("inf")
        self.pid = os.getpid()

    # -- the supervisor's loop ----------------------------------------------------------------
    def run(self) -> int:
        env = shared_store.open_environment(self.store_directory)   # the databases exist
        for name in shared_store.DATABASES:
            env.open_db(name)
        env.close()
        self._start_control()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(sig, self._on_signal)
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        for w in self.workers:
            self._start(w)
        log.info("supervisor (pid %d): %d workers serving; oplocks and leases shared across them, "
                 "each client's connections handed to one worker", os.getpid(), len(self.workers))
        from smbring.server import systemd
        systemd.notify(f"READY=1\nSTATUS=serving with {len(self.workers)} workers")
        status = 0
        try:
            while True:
                self._wait()
                self._reap()
                for sig in self._take_signals():
                    if sig == signal.SIGHUP and not self.stopping:
                        if self.reopen_log is not None:
                            try:
                                self.reopen_log()
                            except Exception as e:      # (the log in force stays)
                                log.error("reload: the supervisor's log not reopened: %s", e)
                        log.info("reload: passing SIGHUP to the workers")
                        self._signal_workers(signal.SIGHUP)
                    elif sig in (signal.SIGTERM, signal.SIGINT) and not self.stopping:
                        systemd.notify("STOPPING=1\nSTATUS=stopping")
                        log.info("stopping: passing SIGTERM to the workers")
                        self.stopping = True
                        self._stop_deadline = time.monotonic() + self.shutdown_timeout + KILL_MARGIN
                        self._signal_workers(signal.SIGTERM)
                if self.stopping:
                    if not any(w.pid for w in self.workers):
                        break
                    if time.monotonic() > self._stop_deadline:
                        for w in self.workers:
                            if w.pid:
                                log.error("worker %d (pid %d) still running after the shutdown "
                                          "timeout: killed", w.slot, w.pid)
                                os.kill(w.pid, signal.SIGKILL)
                        self._stop_deadline = float("inf")
                    continue
                self._restart_due()
        finally:
            self._close()
        log.info("supervisor: every worker stopped")
        return status

    def _on_signal(self, sig, frame) -> None:
        self._signals.append(sig)     # (the wakeup descriptor ends the select)

    def _take_signals(self) -> list[int]:
        taken, self._signals = self._signals, []
        return taken

    def _wait(self) -> None:
        readable = [self._wake_r] + ([self._control] if self._control is not None else [])
        timeout = 1.0
        due = [w.restart_at for w in self.workers if w.restart_at is not None]
        if due:
            timeout = max(0.0, min(due) - time.monotonic())
        if self._metrics is not None:
            readable += self._metrics.sockets()
            timeout = min(timeout, self._metrics.seconds_to_deadline())
        try:
            ready, _, _ = select.select(readable, [], [], timeout)
        except InterruptedError:
            return
        if self._wake_r in ready:
            try:
                while os.read(self._wake_r, 256):
                    pass
            except BlockingIOError:
                pass
        if self._control is not None and self._control in ready:
            self._answer_status()
        if self._metrics is not None:
            self._metrics.on_ready(ready)

    def _reap(self) -> None:
        while True:
            try:
                pid, wait_status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if not pid:
                return
            w = next((w for w in self.workers if w.pid == pid), None)
            if w is None:
                continue
            w.pid = 0
            how = (f"killed by signal {os.WTERMSIG(wait_status)}" if os.WIFSIGNALED(wait_status)
                   else f"exit status {os.waitstatus_to_exitcode(wait_status)}")
            removed = self._clean_up(w)
            if removed >= 0:
                self._wake_workers()
            if self.stopping:
                log.info("worker %d (pid %d) stopped: %s", w.slot, pid, how)
                continue
            lived = time.monotonic() - w.started
            w.pause = RESTART_PAUSE_FIRST if lived > QUICK_DEATH else min(w.pause * 2, RESTART_PAUSE_MOST)
            w.restart_at = time.monotonic() + (0 if lived > QUICK_DEATH else w.pause)
            log.error("worker %d (pid %d) died: %s, after %.1f s; %d entries of its opens, locks "
                      "and connections removed from the shared store; restarting it%s", w.slot, pid,
                      how, lived, removed, "" if lived > QUICK_DEATH else f" in {w.pause:g} s")

    def _clean_up(self, w: Worker) -> int:
        """Removes a dead worker's entries from the shared store: how many went, or -1 when
        that failed (retried before the slot is started again)."""
        try:
            removed = shared_store.remove_worker(self.store_directory, w.slot)
        except Exception:
            log.exception("worker %d: its entries in the shared store could not be removed; "
                          "it is not restarted before they are", w.slot)
            w.cleanup_due = True
            return -1
        w.cleanup_due = False
        return removed

    def _wake_workers(self) -> None:
        """A dead worker's oplocks and leases are gone: the requests the other workers hold
        waiting for them try again now (server.wakeups: a hint; they poll anyway)."""
        from smbring.server import wakeups
        with wakeups.sender() as sock:
            for other in self.workers:
                if other.pid:
                    wakeups.send(sock, self.store_directory, other.slot, wakeups.Message(wakeups.WAKE_ALL))

    def _restart_due(self) -> None:
        now = time.monotonic()
        for w in self.workers:
            if w.restart_at is not None and w.restart_at <= now:
                if w.cleanup_due:
                    removed = self._clean_up(w)
                    if removed < 0:
                        w.restart_at = now + RESTART_PAUSE_FIRST     # the next try
                        continue
                    log.info("worker %d: %d entries of its dead predecessor removed from the "
                             "shared store; restarting it", w.slot, removed)
                    self._wake_workers()
                w.restart_at = None
                w.restarts += 1
                self._start(w)

    def _signal_workers(self, sig: int) -> None:
        for w in self.workers:
            if w.pid:
                try:
                    os.kill(w.pid, sig)
                except ProcessLookupError:
                    pass

    # -- a worker -----------------------------------------------------------------------------
    def _start(self, w: Worker) -> None:
        setup = WorkerSetup(worker=w.slot, generation=w.generation, store_directory=self.store_directory,
                            server_guid=self.server_guid)
        w.generation += 1
        pid = os.fork()
        if pid:
            w.pid, w.started = pid, time.monotonic()
            log.info("worker %d started (pid %d)", w.slot, pid)
            return
        status = 1
        try:        # the child: nothing of the supervisor's goes on here
            signal.set_wakeup_fd(-1)
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
                signal.signal(sig, signal.SIG_DFL)
            os.close(self._wake_r)
            os.close(self._wake_w)
            if self._control is not None:
                self._control.close()       # (the supervisor's copy stays open)
            if self._metrics is not None:
                self._metrics.close()       # (the same)
            os.environ.pop("NOTIFY_SOCKET", None)     # systemd hears the supervisor only
            _stop_with(self.pid)
            status = self.serve(setup, self.listeners)
        except BaseException:
            log.exception("worker %d failed", w.slot)
        finally:
            logging.shutdown()
            os._exit(status)

    def worker_control_path(self, slot: int) -> str | None:
        return worker_control_path(self.control_path, slot)

    # -- smbring status -----------------------------------------------------------------------
    def _start_control(self) -> None:
        if not self.control_path:
            return
        from smbring.server.control import ControlError, _claim, _prepare_directory
        try:
            _prepare_directory(os.path.dirname(os.path.abspath(self.control_path)))
            _claim(self.control_path)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            old_umask = os.umask(0o177)
            try:
                sock.bind(self.control_path)
            finally:
                os.umask(old_umask)
            os.chmod(self.control_path, 0o600)
            sock.listen(16)
            sock.setblocking(False)
            self._control = sock
            self._control_ino = os.stat(self.control_path).st_ino
            log.info("control socket %s (smbring status, all workers)", self.control_path)
        except (ControlError, OSError) as e:
            log.error("no control socket (smbring status will not reach this server): %s", e)

    def _answer_status(self) -> None:
        """One status request, answered from the workers' own control sockets. Blocking,
        bounded by timeouts: the supervisor has nothing more urgent to do."""
        from smbring.server.control import KNOWN, REQUEST_MAX, parse_action, peer_uid
        try:
            conn, _ = self._control.accept()
        except (BlockingIOError, InterruptedError):
            return
        with conn:
            try:
                conn.settimeout(STATUS_TIMEOUT)
                uid = peer_uid(conn)
                line = conn.recv(REQUEST_MAX).split(b"\n", 1)[0].decode(errors="replace").strip()
                action = parse_action(line)
                if uid not in (0, os.geteuid()):
                    answer = {"error": "permission denied"}
                elif line == "status":
                    answer = self.status()
                elif isinstance(action, tuple):
                    answer = self.act(line)
                else:
                    answer = {"error": action or f"unknown request {line[:40]!r} (known: {KNOWN})"}
                conn.sendall(json.dumps(answer).encode() + b"\n")
            except OSError as e:
                log.info("control socket: request dropped: %s", e)

    def status(self) -> dict:
        from smbring.server.control import ask
        workers, connections, shares = [], [], []
        for w in self.workers:
            entry = {"worker": w.slot, "pid": w.pid or None, "restarts": w.restarts}
            if w.pid:
                try:
                    answer = ask(self.worker_control_path(w.slot), timeout=STATUS_TIMEOUT)
                except (OSError, ValueError) as e:
                    entry["error"] = str(e) or type(e).__name__
                else:
                    entry["connections"] = len(answer.get("connections", ()))
                    shares = answer.get("shares", shares)
                    for c in answer.get("connections", ()):
                        connections.append({**c, "worker": w.slot})
            else:
                entry["error"] = "restarting" if not self.stopping else "stopped"
            workers.append(entry)
        connections.sort(key=lambda c: c.get("connected", 0))
        return {"pid": os.getpid(), "stopping": self.stopping, "shares": shares,
                "workers": workers, "connections": connections, "time": time.time()}

    def act(self, request: str) -> dict:
        """An administrator's action (control.ACTIONS) asked of every running worker (each
        reloads its own configuration where the action does, as each does on SIGHUP): the
        tree connects each closed, and the workers that did not answer."""
        from smbring.server.control import ask
        closed, failed, reload_failed = [], [], None
        for w in self.workers:
            if not w.pid:
                failed.append({"worker": w.slot, "error": "restarting" if not self.stopping else "stopped"})
                continue
            try:
                answer = ask(self.worker_control_path(w.slot), request, timeout=STATUS_TIMEOUT)
            except (OSError, ValueError) as e:
                failed.append({"worker": w.slot, "error": str(e) or type(e).__name__})
                continue
            if "error" in answer:
                failed.append({"worker": w.slot, "error": answer["error"]})
                continue
            reload_failed = reload_failed or answer.get("reload_failed")
            closed += [{**t, "worker": w.slot} for t in answer.get("closed", ())]
        answer = {"closed": closed}
        if reload_failed:
            answer["reload_failed"] = reload_failed
        if failed:
            answer["workers_failed"] = failed
        return answer

    def _gather_metrics(self) -> bytes:
        """One scrape: every running worker's metrics (asked on its control socket, as
        `status` does) and the supervisor's own."""
        from smbring.server.control import ask
        from smbring.server.worker_metrics import render
        answers = []
        for w in self.workers:
            text = None
            if w.pid:
                try:
                    text = ask(self.worker_control_path(w.slot), "metrics", timeout=METRICS_TIMEOUT).get("metrics")
                except (OSError, ValueError) as e:
                    log.info("metrics: worker %d did not answer: %s", w.slot, e)
            answers.append((w.slot, text))
        return render(answers, {w.slot: w.restarts for w in self.workers})

    def _close(self) -> None:
        signal.set_wakeup_fd(-1)
        if self._metrics is not None:
            self._metrics.close()
        if self._control is not None:
            self._control.close()
            try:
                if os.stat(self.control_path).st_ino == self._control_ino:
                    os.unlink(self.control_path)
            except OSError:
                pass
        shared_store.remove_store(self.store_directory)
        for listener in self.listeners:
            listener.close()


def _stop_with(supervisor: int) -> None:
    """A worker stops gracefully (SIGTERM) when its supervisor dies, killed or not: nobody
    would restart it or clean up after it (Linux's PR_SET_PDEATHSIG)."""
    import ctypes
    PR_SET_PDEATHSIG = 1
    try:
        # the process's own symbols (libc is loaded already), not ctypes.util.find_library,
        # which runs `ldconfig -p` in a child process
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except OSError:
        return
    if os.getppid() != supervisor:      # it died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def worker_control_path(control_path: str | None, slot: int) -> str | None:
    return f"{control_path}.worker{slot}" if control_path else None


def peer_control_path(own: str, slot: int) -> str:
    """Worker `slot`'s control socket, beside a worker's own (`own`, worker_control_path's)."""
    return worker_control_path(own.rpartition(".worker")[0], slot)


def store_directory(control_path: str | None) -> tuple[str, int]:
    """A fresh, empty directory of mode 0700 for the shared store, in the server's run
    directory (the control socket's, else the default one), and a descriptor holding an
    exclusive lock on it for as long as the server runs (the workers inherit it). Stores of
    servers that are gone (their lock free: a supervisor that was killed) are removed
    first: they describe processes that no longer exist."""
    import fcntl
    import tempfile

    from smbring.server.control import _prepare_directory, default_path
    run = os.path.dirname(os.path.abspath(control_path or default_path()))
    _prepare_directory(run)
    for name in os.listdir(run):
        if name.startswith("store-"):
            path = os.path.join(run, name)
            try:
                fd = os.open(os.path.join(path, "owner"), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError:
                continue                # not one of ours, or being made right now
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue                # a running server's
            finally:
                os.close(fd)
            shared_store.remove_store(path)
    # made under another name and locked before it is named store-*: a server starting at
    # the same moment never sees an unlocked store of a live server, and never removes it
    making = tempfile.mkdtemp(prefix="making-store-", dir=run)       # (mode 0700)
    fd = os.open(os.path.join(making, "owner"), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, f"{os.getpid()}\n".encode())
    path = os.path.join(run, os.path.basename(making)[len("making-"):])
    os.rename(making, path)
    return path, fd
