"""Coverage-guided fuzzing of the named pipes' DCE/RPC (srvsvc, wkssvc, lsarpc: PDUs, their
fragments, the NDR of every operation) with atheris, apart from the SMB2 fuzzer (harness.py),
whose random frames seldom reach a bound pipe with a well-formed request.

    .venv/bin/python tests/fuzz/rpc_harness.py [libFuzzer options] [corpus directories]

for instance, ten minutes from the committed seeds (what Samba's rpcclient sends), new inputs
kept in a scratch directory:

    .venv/bin/python tests/fuzz/rpc_harness.py -max_total_time=600 -timeout=10 \\
        /tmp/rpc-corpus tests/fuzz/rpc_corpus

An input is one pipe's life: its first byte says which interface is served (bits 0-1:
srvsvc, wkssvc, lsarpc), who calls (bits 2-3: an administrator, a user, a guest, an
anonymous caller) and whether a well-formed BIND goes first (bit 4 clear: the fuzzer then
reaches the requests at once); then writes, each a 16-bit length (little-endian), that many
bytes written to the pipe at once, and a 16-bit limit of the READs that follow, until the
pipe holds nothing more to read. A policy handle is 16 random bytes that no input can know:
HANDLE in a write stands for the last one the pipe handed out (an LsarOpenPolicy's answer),
so that the lookups behind the handle check are fuzzed too. An input is checked
(`run_input`):

- neither a write nor a read raises;
- a read returns at most its limit, and never past the end of a PDU;
- what the pipe gives, read end to end, is whole PDUs of version 5.0, each a BIND_ACK,
  BIND_NAK, ALTER_CONTEXT_RESP, RESPONSE or FAULT, none longer than the fragment size a
  pipe allows (4280);
- what waits to be read stays bounded (MAX_PENDING_OUTPUT, plus one call's answer).

Replay one input, or see what the pipe answered:

    .venv/bin/python tests/fuzz/rpc_harness.py crash-<sha1>
    .venv/bin/python tests/fuzz/rpc_harness.py --show crash-<sha1>
"""
from __future__ import annotations

import struct
import sys
from dataclasses import dataclass

INSTRUMENTED = ("smbring.smb.rpc",)
INTERFACES = ("srvsvc", "wkssvc", "lsarpc", "srvsvc")
CALLERS = ("administrator", "user", "guest", "anonymous")
RAW = 0x10
# the syntaxes a BIND proposes: the interface's, with NDR (what every client sends)
NDR = bytes.fromhex("045d888aeb1cc9119fe808002b104860") + struct.pack("<I", 2)
ALLOWED_TYPES = {2: "RESPONSE", 3: "FAULT", 12: "BIND_ACK", 13: "BIND_NAK", 15: "ALTER_CONTEXT_RESP"}
PENDING_BOUND = 64 * 1024 + (1 << 20)       # MAX_PENDING_OUTPUT, and one call's answer
OUTPUT_BOUND = 64 << 20                     # all one input's answers together
READS_PER_WRITE = 4096
HANDLE = bytes(4) + b"smbring-handle!!"     # (in a write: the last policy handle handed out)


class Finding(AssertionError):
    """What the pipe answered broke a check."""


@dataclass
class SessionOf:
    """The SMB session a pipe belongs to, as rpc.services.Caller reads it."""
    guest: bool
    identity: object
    user: str


class OneProcess:
    """A server of one process holding a few sessions, trees and files, for the
    administrators' srvsvc calls (rpc.services.Administration)."""

    def __init__(self):
        from smbring.smb.rpc.services import Activity, FileSeen, SessionSeen, TreeSeen
        alice = SessionSeen("127.0.0.1", "alice", False, True, 10, 1, 2, "SMB 3.1.1")
        guest = SessionSeen("[::1]", "", True, False, 5, 5, 0, "SMB 2.1")
        self._activity = Activity(
            sessions=(alice, guest),
            trees=(TreeSeen(1, alice, "share", False, 2), TreeSeen(2, guest, "IPC$", True, 0)),
            files=(FileSeen(7, "C:\\srv\\share\\a.txt", "alice", True, True, 1),
                   FileSeen(8, "C:\\srv\\share\\dir", "alice", True, False, 0)))

    def activity(self):
        return self._activity

    def close_file(self, file_id: int) -> bool:
        return file_id in (7, 8)

    def end_sessions(self, client, user, spare) -> int:
        return 1

    def activity_everywhere(self, done):
        return None

    def close_file_everywhere(self, file_id, done):
        return None

    def end_sessions_everywhere(self, client, user, spare, done):
        return None


def endpoint(mode: int):
    """A pipe's association for an input whose first byte is `mode`."""
    from smbring.smb.rpc import lsarpc, srvsvc, wkssvc
    from smbring.smb.rpc.endpoint import Endpoint
    from smbring.server.unix_names import UnixNames     # (the system's accounts, as served)
    from smbring.smb.rpc.services import Caller, ServerInfo
    from smbring.smb.state import Share
    interface = {"srvsvc": srvsvc, "wkssvc": wkssvc, "lsarpc": lsarpc}[INTERFACES[mode & 3]].INTERFACE
    who = CALLERS[(mode >> 2) & 3]
    from smbring.vfs.identity import Identity
    user = {"administrator": "root", "user": "alice", "guest": "nobody"}.get(who, "")
    uid = 0 if who == "administrator" else 1000
    session = SessionOf(guest=who in ("guest", "anonymous"), identity=Identity(user, uid, uid, (uid,)),
                        user=user)
    shares = (Share("share", "/srv/share", comment="files"), Share("IPC$", "", comment="IPC"),
              Share("hidden$", "/srv/hidden", comment="%U's"))
    caller = Caller(shares, ServerInfo(), session.user, session.guest, session=session,
                    administration=OneProcess(), unix_names=UnixNames())
    return Endpoint(interface, caller, assoc_group=0x1234), interface


def bind_for(interface) -> bytes:
    """A well-formed BIND of the interface's syntax with NDR, fragments of 4280 bytes."""
    syntax = interface.syntax
    context = struct.pack("<HBB", 0, 1, 0) + syntax.uuid + struct.pack("<I", syntax.version) + NDR
    body = struct.pack("<HHIBBH", 4280, 4280, 0, 1, 0, 0) + context
    return struct.pack("<BBBB4sHHI", 5, 0, 11, 3, b"\x10\0\0\0", 16 + len(body), 0, 1) + body


def writes(data: bytes):
    """The input's writes after its first byte: (bytes, read limit) each."""
    pos = 1
    while pos + 2 <= len(data):
        n = struct.unpack_from("<H", data, pos)[0]
        chunk = data[pos + 2:pos + 2 + n]
        pos += 2 + n
        limit = struct.unpack_from("<H", data, pos)[0] if pos + 2 <= len(data) else 4280
        pos += 2
        yield chunk, limit


def encode(mode: int, steps) -> bytes:
    """An input: `mode`, then (bytes, read limit) each (the seeds' way of writing one)."""
    out = bytes([mode])
    for chunk, limit in steps:
        out += struct.pack("<H", len(chunk)) + chunk + struct.pack("<H", limit)
    return out


def handed_out(answer: bytes) -> bytes | None:
    """The policy handle a RESPONSE PDU hands out, where it answers an LsarOpenPolicy (its stub
    data a handle and STATUS_SUCCESS, nothing more)."""
    if len(answer) == 24 + 24 and answer[2] == 2 and answer[24 + 20:] == bytes(4) and answer[24:28] == bytes(4):
        return answer[24:44]
    return None


def check_stream(stream: bytes) -> list[str]:
    """The PDUs the pipe gave, in order (their types); a Finding where they are not whole,
    well-formed answers."""
    seen, pos = [], 0
    while pos < len(stream):
        if len(stream) - pos < 16:
            raise Finding(f"{len(stream) - pos} bytes at the end of the pipe's output: not a PDU")
        version, minor, ptype = stream[pos], stream[pos + 1], stream[pos + 2]
        length = struct.unpack_from("<H", stream, pos + 8)[0]
        if (version, minor) != (5, 0) or ptype not in ALLOWED_TYPES:
            raise Finding(f"a PDU of version {version}.{minor}, type {ptype}, at {pos}")
        if not 16 <= length <= 4280 or pos + length > len(stream):
            raise Finding(f"a {ALLOWED_TYPES[ptype]} of {length} bytes at {pos} "
                          f"({len(stream) - pos} left)")
        seen.append(ALLOWED_TYPES[ptype])
        pos += length
    return seen


def run_input(data: bytes) -> list[str]:
    """One input on a fresh pipe, checked; the types of the PDUs it answered."""
    if not data:
        return []
    mode = data[0]
    ep, interface = endpoint(mode)
    steps = list(writes(data))
    if not mode & RAW:
        steps.insert(0, (bind_for(interface), 4280))
    stream = bytearray()
    handle = None
    for chunk, limit in steps:
        if handle is not None and HANDLE in chunk:
            chunk = chunk.replace(HANDLE, handle)
        ep.write(chunk)
        if ep.pending() > PENDING_BOUND:
            raise Finding(f"{ep.pending()} bytes wait to be read after a write of {len(chunk)}")
        for _ in range(READS_PER_WRITE):
            if not ep.pending():
                break
            before = ep.pending()
            got = ep.read(max(limit, 1))
            if not got or len(got) > max(limit, 1) or ep.pending() != before - len(got):
                raise Finding(f"a read of at most {limit} bytes gave {len(got)} "
                              f"({before} pending before, {ep.pending()} after)")
            stream += got
            handle = handed_out(got) or handle
        if len(stream) > OUTPUT_BOUND:
            raise Finding(f"{len(stream)} bytes of answers to one input")
    return check_stream(bytes(stream))


def worker(argv: list[str]) -> None:
    import importlib

    import atheris
    from harness import instrument
    for module in ("endpoint", "lsarpc", "srvsvc", "wkssvc"):      # (loaded, to be instrumented)
        importlib.import_module(f"smbring.smb.rpc.{module}")
    count = instrument(INSTRUMENTED)
    print(f"INFO: instrumented {count} functions of {', '.join(INSTRUMENTED)}", file=sys.stderr)
    atheris.Setup([f"{sys.executable} {__file__}"] + argv[1:], run_input)
    atheris.Fuzz()


def show(paths: list[str]) -> int:
    failed = 0
    for path in paths:
        with open(path, "rb") as f:
            data = f.read()
        mode = data[0] if data else 0
        print(f"== {path}: {INTERFACES[mode & 3]}, {CALLERS[(mode >> 2) & 3]}, "
              f"{'raw' if mode & RAW else 'bound first'}; writes of {[len(c) for c, _ in writes(data)]}")
        try:
            print("   answers:", " ".join(run_input(data)) or "none")
        except Exception as e:      # a check, or the endpoint's own exception
            failed += 1
            print(f"   FINDING: {type(e).__name__}: {e}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.path.insert(0, __file__.rsplit("/", 1)[0])
    if sys.argv[1:2] == ["--show"]:
        sys.exit(show(sys.argv[2:]))
    worker(sys.argv)
