"""Prometheus metrics with ``--workers N``: one ``/metrics`` for the whole server.

Each worker keeps its own metrics (``server.metrics.Metrics``, without an HTTP server of its
own) and gives them, in Prometheus' text format, to whoever asks its control socket
``metrics`` (only root and the server's own user may). The supervisor listens on the metrics
address; at each scrape it asks every running worker, labels each worker's samples
``worker="N"``, and adds its own: ``smbring_workers_running`` and
``smbring_worker_restarts_total{worker}``. A worker that does not answer within the timeout
is left out of that scrape (``smbring_worker_up{worker}`` says which).

The supervisor must never be held by a scraper (it restarts dead workers): requests are read
as their bytes arrive, in the supervisor's own ``select``, each within a deadline, at most
``PENDING_MOST`` at once (a further connection closes the one that has waited longest), and
an answer the client
cannot hand to the kernel in one non-blocking send is dropped.
"""
from __future__ import annotations

import logging
import socket
import time

log = logging.getLogger("smbring.metrics")

PENDING_MOST = 16           # scrapes being read at once
REQUEST_DEADLINE = 5.0      # seconds to send the request line and headers
REQUEST_MAX = 8192          # bytes of them
SEND_BUFFER = 1 << 20       # bytes: an answer larger than the kernel takes at once is dropped


def render(answers: list[tuple[int, str | None]], restarts: dict[int, int]) -> bytes:
    """One exposition from the workers' (slot, text or None when it did not answer) and
    the supervisor's own figures."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
    from prometheus_client.parser import text_string_to_metric_families

    families: dict[str, Metric] = {}
    up = GaugeMetricFamily("smbring_worker_up", "1 when the worker answered this scrape", labels=["worker"])
    for slot, text in answers:
        up.add_metric([str(slot)], 0 if text is None else 1)
        for family in text_string_to_metric_families(text or ""):
            merged = families.get(family.name)
            if merged is None:
                merged = families[family.name] = Metric(family.name, family.documentation, family.type,
                                                        family.unit)
            for sample in family.samples:
                merged.add_sample(sample.name, {**sample.labels, "worker": str(slot)}, sample.value,
                                  sample.timestamp, sample.exemplar)
    running = GaugeMetricFamily("smbring_workers_running", "Worker processes running",
                                value=sum(1 for _, text in answers if text is not None))
    restarted = CounterMetricFamily("smbring_worker_restarts", "Workers started again after dying",
                                    labels=["worker"])
    for slot, count in sorted(restarts.items()):
        restarted.add_metric([str(slot)], count)

    class Collected:        # a prometheus_client collector of what was gathered above
        def collect(self):
            yield from families.values()
            yield up
            yield running
            yield restarted

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collected())
    return generate_latest(registry)


class MetricsEndpoint:
    """``GET /metrics`` answered from the supervisor's loop (see the module's description).

    `gather()` returns the exposition; it is called once per complete request."""

    def __init__(self, listener: socket.socket, gather):
        self.listener = listener
        listener.setblocking(False)
        self.gather = gather
        self._pending: dict[socket.socket, tuple[bytearray, float]] = {}

    def sockets(self) -> list[socket.socket]:
        return [self.listener, *self._pending]

    def seconds_to_deadline(self) -> float:
        if not self._pending:
            return float("inf")
        return max(0.0, min(deadline for _, deadline in self._pending.values()) - time.monotonic())

    def on_ready(self, ready) -> None:
        if self.listener in ready:
            self._accept()
        for conn in [conn for conn in self._pending if conn in ready]:
            self._read(conn)
        now = time.monotonic()
        for conn in [conn for conn, (_, deadline) in self._pending.items() if deadline <= now]:
            self._drop(conn)

    def close(self) -> None:
        for conn in list(self._pending):
            self._drop(conn)
        self.listener.close()

    def _accept(self) -> None:
        for _ in range(PENDING_MOST):
            try:
                conn, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:        # (out of descriptors: the next scrape tries again)
                log.warning("metrics: accept failed: %s", e)
                return
            if len(self._pending) >= PENDING_MOST:     # the one that has had longest goes
                self._drop(min(self._pending, key=lambda c: self._pending[c][1]))
            conn.setblocking(False)
            self._pending[conn] = (bytearray(), time.monotonic() + REQUEST_DEADLINE)

    def _read(self, conn: socket.socket) -> None:
        head, _ = self._pending[conn]
        try:
            chunk = conn.recv(REQUEST_MAX)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        head += chunk
        if not chunk or len(head) > REQUEST_MAX:
            self._drop(conn)
        elif b"\r\n\r\n" in head:
            del self._pending[conn]
            with conn:
                self._answer(conn, bytes(head))

    def _answer(self, conn: socket.socket, head: bytes) -> None:
        method, target = (head.split(b"\r\n", 1)[0].split(b" ") + [b"", b""])[:2]
        if method == b"GET" and target.split(b"?")[0] == b"/metrics":
            from prometheus_client import CONTENT_TYPE_LATEST
            body, status, kind = self.gather(), b"200 OK", CONTENT_TYPE_LATEST.encode()
        else:
            body, status, kind = b"see /metrics\n", b"404 Not Found", b"text/plain"
        answer = (b"HTTP/1.1 " + status + b"\r\nContent-Type: " + kind + b"\r\nContent-Length: "
                  + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
        try:        # one send into a buffer made large enough: a client that does not read
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)    # holds nothing
            sent = conn.send(answer)
        except OSError as e:
            sent, why = 0, str(e)
        else:
            why = "the client's receive window is full"
        if sent < len(answer):
            log.info("metrics: answer of %d bytes dropped after %d: %s", len(answer), sent, why)

    def _drop(self, conn: socket.socket) -> None:
        self._pending.pop(conn, None)
        conn.close()
