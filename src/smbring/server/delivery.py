"""Whether a client's TCP stack acknowledged a break notification (Samba's
smbd_smb2_break_send and its ack queue): a client that no longer acknowledges what the server
sends on a connection has lost that connection, and the break is sent again on another one
of its channels (smb.breaks).

After a break is handed to the kernel, the connection is looked at every retransmission
timeout (the kernel's, kept between 0.2 and 1 s, as Samba does): the break counts as
delivered once the bytes that were queued at the first look are acknowledged
(TCP_INFO's bytes_acked, with SIOCOUTQ's count of bytes not yet acknowledged). After six
retransmission timeouts without that, the connection is closed and the core told. Where the
kernel tells nothing of the kind (not a TCP socket), a break counts as delivered.
"""
from __future__ import annotations

import asyncio
import fcntl
import logging
import socket
import struct
import termios
from typing import Callable

log = logging.getLogger(__name__)

RTO_MIN, RTO_MAX = 0.2, 1.0     # seconds: the retransmission timeout used, bounded (Samba's)
RTO_MULTIPLE = 6                # retransmission timeouts a break has to be acknowledged in
_TCP_INFO_SIZE = 232
_RTO_AT, _BYTES_ACKED_AT = 8, 120   # struct tcp_info: tcpi_rto (µs), tcpi_bytes_acked


def tcp_state(sock: socket.socket) -> tuple[int, int, float] | None:
    """(bytes acknowledged so far, bytes not yet acknowledged, retransmission timeout in
    seconds), or None where the kernel does not tell (not TCP, an old kernel)."""
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_SIZE)
        queued = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0]
    except (OSError, ValueError):
        return None
    if len(info) < _BYTES_ACKED_AT + 8:
        return None
    rto = struct.unpack_from("<I", info, _RTO_AT)[0] / 1e6
    acked = struct.unpack_from("<Q", info, _BYTES_ACKED_AT)[0]
    return acked, max(queued, 0), min(max(rto, RTO_MIN), RTO_MAX)


class DeliveryWatch:
    """The watches of one connection's breaks. `never_acked()`: the connection counts nothing
    as acknowledged (smb.breaks' test control); `lost(reason)` closes the connection."""

    def __init__(self, sock: socket.socket, never_acked: Callable[[], bool],
                 lost: Callable[[str], None]):
        self.sock = sock
        self.never_acked = never_acked
        self.lost = lost
        self.tasks: set = set()

    def watch(self, delivered: Callable[[bool], None]) -> None:
        task = asyncio.ensure_future(self._watch(delivered))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _watch(self, delivered: Callable[[bool], None]) -> None:
        try:
            ok = await self._acknowledged()
        except Exception:       # a bug of ours: take it as delivered, as without a watch
            log.exception("watching a break's delivery failed")
            ok = True
        if not ok:
            self.lost(f"a break was not acknowledged within {RTO_MULTIPLE} retransmission timeouts")
        delivered(ok)

    async def _acknowledged(self) -> bool:
        if self.sock.fileno() == -1:
            return False                # closed already
        state = tcp_state(self.sock)
        if state is None:
            return not self.never_acked()
        rto, target = state[2], None
        for _ in range(RTO_MULTIPLE):
            await asyncio.sleep(rto)
            state = tcp_state(self.sock)
            if state is None:           # the socket is gone
                return False
            if self.never_acked():
                continue
            acked, queued, _rto = state
            if target is None:          # what was queued by now includes the break
                target = acked + queued
            if acked >= target:
                return True
        return False
