"""A proxy that lies on purpose: between a client under test and a real server, it hands each
frame the server sends to a function of the test's, which may change it (or drop it). The
client's tests (tests/client) and the Kerberos tests (a tampered AP-REP) use it."""
import asyncio
import inspect
import struct


class TamperingProxy:
    """An asyncio server of our own between the client and a real server: each frame from the
    server goes through `tamper(frame) -> frame` first (None drops it). Frames from the client
    pass unchanged, or through `intercept(frame) -> frame` if given, which may instead return
    None after answering the client itself with `answer(frame)`; an `async def` intercept may
    also wait (the frames after it wait too). The server then lies exactly where a test wants
    it to. A frame of compounded responses goes to `tamper` one response at a time, and is
    chained again around what it returns (`whole_frames`: the frame as it came, to lie in
    the chaining itself)."""

    def __init__(self, upstream_port: int, tamper, intercept=None, whole_frames: bool = False):
        self.upstream_port, self.tamper = upstream_port, tamper
        self.whole_frames = whole_frames
        self.intercept = intercept or (lambda frame: frame)
        self._clients = []
        self.server = None
        self.port = 0

    async def __aenter__(self):
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc):
        self.server.close()
        await self.server.wait_closed()

    def answer(self, frame: bytes):
        """Sends `frame` to the client whose frame `intercept` is looking at."""
        self._clients[-1].write(struct.pack(">I", len(frame)) + bytes(frame))

    async def _serve(self, creader, cwriter):
        sreader, swriter = await asyncio.open_connection("127.0.0.1", self.upstream_port)

        def from_client(frame):
            self._clients.append(cwriter)
            try:
                out = self.intercept(frame)
            finally:
                self._clients.pop()
            return self._with_client(cwriter, out) if inspect.isawaitable(out) else out

        async def pump(reader, writer, change):
            try:
                while True:
                    head = await reader.readexactly(4)
                    frame = await reader.readexactly(struct.unpack(">I", head)[0])
                    frame = change(bytearray(frame))
                    if inspect.isawaitable(frame):
                        frame = await frame
                    if frame is None:
                        continue
                    writer.write(struct.pack(">I", len(frame)) + bytes(frame))
                    await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()
        from_server = self.tamper if self.whole_frames else self._each_response
        await asyncio.gather(pump(creader, swriter, from_client), pump(sreader, cwriter, from_server))

    def _each_response(self, frame):
        """`tamper` applied to each response of a compounded frame in turn; the frame chained
        again around what it returns (8-byte aligned, NextCommand set; None drops one)."""
        if frame[:4] != b"\xfeSMB" or not struct.unpack_from("<I", frame, 20)[0]:
            return self.tamper(frame)
        parts, start = [], 0
        while True:
            step = struct.unpack_from("<I", frame, start + 20)[0]
            end = start + step if step else len(frame)
            part = bytearray(frame[start:end])
            struct.pack_into("<I", part, 20, 0)         # (the tamper sees it alone)
            parts.append(part)
            if not step or end + 64 > len(frame):
                break
            start = end
        answers = [a for a in (self.tamper(p) for p in parts) if a is not None]
        if not answers:
            return None
        chained = bytearray()
        for i, answer in enumerate(answers):
            answer = bytearray(answer)
            last = i == len(answers) - 1
            if not last:
                answer += bytes(-len(answer) & 7)
            struct.pack_into("<I", answer, 20, 0 if last else len(answer))
            chained += answer
        return chained

    async def _with_client(self, cwriter, step):
        """An async intercept's steps, `answer` reaching the client whose frame it holds."""
        self._clients.append(cwriter)
        try:
            return await step
        finally:
            self._clients.remove(cwriter)
