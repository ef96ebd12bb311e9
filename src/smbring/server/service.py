"""The server as a service: listening sockets (bound here or passed by systemd), signals,
readiness, the control socket and metrics around one `Server`.

- SIGHUP reloads the configuration (and reopens the log file): new and changed shares apply
  to new tree connects, the other settings to new connections; sessions in progress keep
  working. A configuration that fails to load changes nothing (the error is logged).
- SIGTERM and SIGINT stop gracefully: no new connections; each connection closes once it
  is quiet (nothing in flight, no open file); after ``shutdown timeout`` seconds (default
  10) the rest are closed.
- systemd: READY=1 once listening, RELOADING=1 / READY=1 around a reload, STOPPING=1, and
  a STATUS line; socket activation through LISTEN_FDS.
"""
from __future__ import annotations

import asyncio
import errno
import logging
import os
import signal
import socket
import time
from dataclasses import dataclass

from smbring.server import systemd

log = logging.getLogger("smbring.server")

SHUTDOWN_TIMEOUT = 10.0


class ListenError(ValueError):
    """An operator's mistake about where to listen: one line to print, with a hint."""


def parse_listen(text: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """HOST:PORT, [IPv6]:PORT or :PORT (the default host) -> (host, port)."""
    host, colon, port = text.strip().rpartition(":")
    if not colon or not port.isdigit() or not 0 < int(port) < 65536:
        raise ListenError(f"listen {text!r}: expected HOST:PORT with a port from 1 to 65535 "
                          "(e.g. 0.0.0.0:445, [::]:445)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ListenError(f"listen {text!r}: write an IPv6 address in brackets: [{host}]:{port}")
    return host or default_host, int(port)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket, or a ListenError saying what is wrong and what to do."""
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        resolved = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM)[0][4]
        return socket.create_server(resolved, family=family, backlog=128)
    except socket.gaierror as e:
        raise ListenError(f"cannot listen on {where}: {host!r} is not an address or a known "
                          f"host name ({e.strerror})") from None
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            hint = f"another server listens there (`ss -ltnp 'sport = :{port}'` shows which)"
        elif e.errno == errno.EACCES and port < 1024:
            hint = ("ports below 1024 need privilege: use socket activation "
                    "(contrib/smbring.socket) or CAP_NET_BIND_SERVICE on a dedicated interpreter "
                    "(README: Run as a service), or a port above 1023")
        elif e.errno == errno.EADDRNOTAVAIL:
            hint = "no interface of this machine has that address"
        else:
            hint = "see the error"
        reason = os.strerror(e.errno) if e.errno else str(e)
        raise ListenError(f"cannot listen on {where}: {reason}: {hint}") from None


@dataclass
class Extras:
    """What runs beside the server: where the control socket and the metrics are."""

    control_socket: str | None = None       # None: no control socket
    metrics: tuple[str, int] | None = None
    metrics_listener: socket.socket | None = None      # bound at start: metrics' address
    # metrics kept without serving them (a worker's: its supervisor serves them)
    metrics_collected: bool = False
    shutdown_timeout: float = SHUTDOWN_TIMEOUT


async def run(server, listeners: list[socket.socket], extras: Extras, reload) -> int:
    """Serves until SIGTERM or SIGINT, then stops gracefully. reload() is called on SIGHUP
    and returns a message (what changed) or raises (then nothing changed). Returns the
    exit status.

    All of it is the server's own work: where the server acts as its users (started as
    root), the event loop's thread is made the server's again before each step of it, before
    a reload, and in any thread the loop starts, whichever user it acted as last."""
    return await server.server_work(_serve(server, listeners, extras, reload))


async def _serve(server, listeners: list[socket.socket], extras: Extras, reload) -> int:
    from concurrent.futures import ThreadPoolExecutor

    from smbring.server.control import ControlError, ControlSocket
    loop = asyncio.get_running_loop()
    # the loop's own threads (name look-ups) start as the server, not as whoever it acted as
    loop.set_default_executor(ThreadPoolExecutor(max_workers=4, thread_name_prefix="smbring-loop",
                                                 initializer=server.server_thread))
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: _reload(reload, server))
    metrics = None
    if extras.metrics is not None or extras.metrics_collected:
        from smbring.server.metrics import Metrics
        metrics = server.metrics = Metrics(server)
        if extras.metrics_listener is not None:
            await metrics.start(extras.metrics_listener)
    control = None
    if extras.control_socket:
        control = ControlSocket(server, extras.control_socket, reload=lambda: _reload(reload, server))
        try:
            await control.start()
        except (ControlError, OSError) as e:     # serving matters more than status
            log.error("no control socket (smbring status will not reach this server): %s", e)
            control = None
        else:       # (a worker's: the other workers' sockets are beside it)
            server.administration.control_path = extras.control_socket
    serving = asyncio.ensure_future(server.server_work(server.serve_on(listeners)))
    await asyncio.sleep(0)          # serve_on has logged that it listens
    systemd.notify(f"READY=1\nSTATUS=serving {', '.join(server.shares)}")
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait([serving, stopping], return_when=asyncio.FIRST_COMPLETED)
    status = 0
    if serving.done():             # the listeners failed: say why, and stop all the same
        error = serving.exception()
        if error is not None:
            log.error("no longer accepting connections: %s", error)
            status = 1
    stopping.cancel()
    systemd.notify("STOPPING=1\nSTATUS=stopping")
    log.info("stopping (signal received): accepting no new connections")
    server.stopping = True
    serving.cancel()
    await asyncio.gather(serving, return_exceptions=True)
    await server.stop(extras.shutdown_timeout)
    if control is not None:
        await control.close()
    if metrics is not None:
        await metrics.close()
    return status


def _reload(reload, server) -> str | None:
    """A reload, logged; why it failed (the configuration in force then stays), else None."""
    with server.as_server():       # files only root may read, the log reopened as root's
        systemd.notify(f"RELOADING=1\nMONOTONIC_USEC={time.monotonic_ns() // 1000}")
        failure = None
        try:
            message = reload()
        except Exception as e:         # a bad file, a missing share path, a log file not writable
            log.error("reload failed, keeping the configuration in force: %s", e)
            failure = str(e) or type(e).__name__
        else:
            log.info("configuration reloaded: %s", message)
        systemd.notify("READY=1")
        return failure
