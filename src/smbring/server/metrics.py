"""Prometheus metrics (optional: ``pip install 'smbring[metrics]'``; off unless
``metrics port`` or ``--metrics HOST:PORT`` is given).

Served over plain HTTP at ``/metrics`` from the server's own event loop, so a scrape reads
the server's state between two steps of the loop, never while a connection changes it. The
metrics:

- ``smbring_requests_total{command}`` and ``smbring_request_seconds{command}``: SMB2
  requests; the time is from a frame's arrival to its response sent (a compound counts its
  requests, its time goes to ``command="compound"``; a lone WRITE's time ends when its write
  has started, as its I/O runs while the connection receives the next frame);
- ``smbring_connections_total`` (accepted), ``smbring_connections_open`` (now);
- ``smbring_read_bytes_total{path}`` and ``smbring_reads_total{path}``: file data sent, by the
  read path chosen (copy, mmap, splice, zc; ``memory`` for READs signed, sealed or in a
  compound, which are read into memory first);
- ``smbring_written_bytes_total``: file data written;
- ``smbring_busy_poll_seconds_total``: time the event loop spent looking for requests after
  its answers (`busy poll`; 0 while it is off): the CPU time it costs.
"""
from __future__ import annotations

import asyncio
import logging

from smbring.smb import wire

log = logging.getLogger("smbring.metrics")

COMMAND_NAMES = {value: name.lower() for name, value in vars(wire).items()
                 if name in ("NEGOTIATE", "SESSION_SETUP", "LOGOFF", "TREE_CONNECT", "TREE_DISCONNECT",
                             "CREATE", "CLOSE", "FLUSH", "READ", "WRITE", "LOCK", "IOCTL", "CANCEL", "ECHO",
                             "QUERY_DIRECTORY", "CHANGE_NOTIFY", "QUERY_INFO", "SET_INFO", "OPLOCK_BREAK")}
BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)
REQUEST_MAX = 8192
# scrapes served at once: the port is open to every local user (and to whoever the address
# given lets in), and each connection holds a descriptor while it waits up to 10 s for its
# request; more are closed as soon as they are accepted, so idle connections cannot take
# the descriptors the SMB connections need
MAX_CONNECTIONS = 16


class MetricsUnavailable(RuntimeError):
    pass


class Metrics:
    """The server's metrics in a registry of their own (nothing module-wide)."""

    def __init__(self, server):
        try:
            import prometheus_client as prom
            from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
        except ImportError:
            raise MetricsUnavailable("metrics need prometheus-client: pip install 'smbring[metrics]'") from None
        self._prom = prom
        self._families = (CounterMetricFamily, GaugeMetricFamily)
        self.server = server
        self.registry = prom.CollectorRegistry(auto_describe=True)
        self.requests = prom.Counter("smbring_requests", "SMB2 requests", ["command"], registry=self.registry)
        self.latency = prom.Histogram("smbring_request_seconds", "From a frame's arrival to its response",
                                      ["command"], buckets=BUCKETS, registry=self.registry)
        self.accepted = prom.Counter("smbring_connections", "Connections accepted", registry=self.registry)
        # the counts of connections that have closed (live ones are read at scrape time)
        self._closed_reads: dict[str, list[int]] = {}
        self._closed_written = 0
        self.registry.register(self)
        self._http: asyncio.AbstractServer | None = None
        self._serving = 0               # connections being served now (MAX_CONNECTIONS)

    # -- what the server reports --------------------------------------------------------
    def connected(self) -> None:
        self.accepted.inc()

    def frame(self, commands: list[int], seconds: float) -> None:
        # a code that names no command is "other": a label per code the client sends made
        # series without end (a counter and a histogram each, before any logon)
        for command in commands:
            self.requests.labels(COMMAND_NAMES.get(command, "other")).inc()
        if commands:
            label = COMMAND_NAMES.get(commands[0], "other") if len(commands) == 1 else "compound"
            self.latency.labels(label).observe(seconds)

    def disconnected(self, link) -> None:
        for path, (count, nbytes) in self._reads_of(link).items():
            totals = self._closed_reads.setdefault(path, [0, 0])
            totals[0] += count
            totals[1] += nbytes
        self._closed_written += link.runner.bytes_written if link.runner else 0

    @staticmethod
    def _reads_of(link) -> dict[str, tuple[int, int]]:
        out = {}
        stats = getattr(getattr(link.transport, "tx", None), "stats", None)
        if stats is not None:
            for path, count in stats.by_path.items():
                out[path] = (count, stats.bytes_by_path.get(path, 0))
        if link.runner is not None and link.runner.bytes_read_in_memory:
            out["memory"] = (0, link.runner.bytes_read_in_memory)
        return out

    # -- a prometheus_client collector: what is read from the server at scrape time ---------
    def collect(self):
        counter, gauge = self._families
        reads = {path: list(v) for path, v in self._closed_reads.items()}
        written = self._closed_written
        for link in list(self.server.links):
            for path, (count, nbytes) in self._reads_of(link).items():
                totals = reads.setdefault(path, [0, 0])
                totals[0] += count
                totals[1] += nbytes
            written += link.runner.bytes_written if link.runner else 0
        read_bytes = counter("smbring_read_bytes", "File data sent, by read path", labels=["path"])
        read_count = counter("smbring_reads", "READ responses sent, by read path", labels=["path"])
        for path, (count, nbytes) in sorted(reads.items()):
            read_bytes.add_metric([path], nbytes)
            read_count.add_metric([path], count)
        yield read_bytes
        yield read_count
        yield counter("smbring_written_bytes", "File data written", value=written)
        yield counter("smbring_busy_poll_seconds", "Time the loop spent looking for requests after answers",
                      value=self.server.busy_poll.looking)
        yield gauge("smbring_connections_open", "Connections now", value=len(self.server.links))

    def describe(self):
        return []      # collected afresh at every scrape

    def exposition(self) -> str:
        """Every metric in Prometheus' text format."""
        return self._prom.generate_latest(self.registry).decode()

    # -- /metrics over HTTP, on the event loop -------------------------------------------------
    async def start(self, listener) -> None:
        """Serves /metrics on `listener`, a listening socket (bound as the server starts)."""
        # each scrape is the server's work: as the server, whoever the loop acted as last
        self._http = await asyncio.start_server(
            lambda reader, writer: self.server.server_work(self._serve(reader, writer)), sock=listener)
        host, port = listener.getsockname()[:2]
        log.info("metrics on http://%s:%d/metrics", host, port)

    async def close(self) -> None:
        if self._http is not None:
            self._http.close()
            await self._http.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._serving >= MAX_CONNECTIONS:
            writer.close()
            return
        self._serving += 1
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            if len(head) > REQUEST_MAX:
                raise ValueError("request too large")
            method, target = (head.split(b"\r\n", 1)[0].split(b" ") + [b"", b""])[:2]
            if method == b"GET" and target.split(b"?")[0] == b"/metrics":
                body, status = self._prom.generate_latest(self.registry), b"200 OK"
                kind = self._prom.CONTENT_TYPE_LATEST.encode()
            else:
                body, status, kind = b"see /metrics\n", b"404 Not Found", b"text/plain"
            writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Type: " + kind + b"\r\nContent-Length: "
                         + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
            await writer.drain()
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ValueError):
            pass
        finally:
            self._serving -= 1
            writer.close()
