"""The asyncio SMB server: one task per connection, NetBIOS session framing, bounded frames.

Frames are read with ``asyncio`` streams and handed to a :class:`Connection`; responses are
written back in order. Malformed framing or a protocol violation closes the connection; an
error inside a command becomes an NTSTATUS (see ``smb.connection``).
"""
from __future__ import annotations

import asyncio
import logging
import socket

from smbring.smb.connection import MAX_IO, Connection, Share

log = logging.getLogger("smbring.server")
MAX_FRAME = MAX_IO + 65536


class Server:
    def __init__(self, shares: dict[str, Share], *, passdb_path: str, allow_guest: bool = False,
                 signing_required: bool = False):
        self.shares = shares
        self.passdb_path = passdb_path
        self.allow_guest = allow_guest
        self.signing_required = signing_required
        self.connections = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = writer.get_extra_info("peername")
        conn = Connection(self.shares, passdb_path=self.passdb_path, allow_guest=self.allow_guest,
                          signing_required=self.signing_required)
        self.connections += 1
        log.info("connection from %s", peer)
        try:
            while True:
                head = await reader.readexactly(4)
                if head[0] != 0:
                    raise ConnectionError("not a NetBIOS session message")
                size = int.from_bytes(head[1:], "big")
                if size < 64 or size > MAX_FRAME:
                    raise ConnectionError(f"frame of {size} bytes refused")
                frame = await reader.readexactly(size)
                for out in conn.handle_frame(frame):
                    writer.write(len(out).to_bytes(4, "big") + out)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError) as e:
            log.info("connection from %s closed: %s", peer, e or "eof")
        except Exception:
            log.exception("connection from %s failed", peer)
        finally:
            conn.close_all()
            self.connections -= 1
            writer.close()
            try:
                await writer.wait_closed()
            except (ConnectionError, OSError):
                pass

    async def serve(self, host: str, port: int) -> None:
        srv = await asyncio.start_server(self.handle, host, port, reuse_address=True,
                                         limit=MAX_FRAME)
        log.warning("smbring serving %s on %s:%d", ", ".join(self.shares), host, port)
        async with srv:
            await srv.serve_forever()
