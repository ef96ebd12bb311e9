"""A proxy that lies on purpose: between a client under test and a real server, it hands each
frame the server sends to a function of the test's, which may change it (or drop it). The
client's tests (tests/client) and the Kerberos tests (a tampered AP-REP) use it."""
import asyncio
import struct


class TamperingProxy:
    """An asyncio server of our own between the client and a real server: frames from the
    client pass unchanged, each frame from the server goes through `tamper(frame) -> frame`
    first. The server then lies exactly where a test wants it to."""

    def __init__(self, upstream_port: int, tamper):
        self.upstream_port, self.tamper = upstream_port, tamper
        self.server = None
        self.port = 0

    async def __aenter__(self):
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc):
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, creader, cwriter):
        sreader, swriter = await asyncio.open_connection("127.0.0.1", self.upstream_port)

        async def pump(reader, writer, change):
            try:
                while True:
                    head = await reader.readexactly(4)
                    frame = await reader.readexactly(struct.unpack(">I", head)[0])
                    frame = change(bytearray(frame))
                    if frame is None:
                        continue
                    writer.write(struct.pack(">I", len(frame)) + bytes(frame))
                    await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()
        await asyncio.gather(pump(creader, swriter, lambda f: f), pump(sreader, cwriter, self.tamper))
