"""Malformed and hostile input: an error status or a clean disconnect, never a crash or hang,
and the server keeps serving others."""
import os
import socket
import struct

import pytest

from servers import smbclient


def frame(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


def header(command: int, message_id: int = 0, session_id: int = 0) -> bytes:
    return struct.pack("<4sHHIHHIIQIIQ16s", b"\xfeSMB", 64, 0, 0, command, 1, 0, 0, message_id,
                       0, 0, session_id, b"\0" * 16)


def negotiate() -> bytes:
    dialects = [0x0202, 0x0210, 0x0300, 0x0302]
    body = struct.pack("<HHHHI16sIHH", 36, len(dialects), 1, 0, 0, b"\1" * 16, 0, 0, 0)
    return header(0) + body + struct.pack(f"<{len(dialects)}H", *dialects)


def exchange(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not chunk:
                break
            out += chunk
        return out


@pytest.mark.parametrize("data", [
    b"\x00\x00\x00\x10" + b"\xfeSMB",                        # truncated frame
    b"\x00\xff\xff\xff" + os.urandom(100),                    # length far over the limit
    b"\x85\x00\x00\x00",                                     # NetBIOS keepalive type, not a message
    os.urandom(4096),                                         # noise
    frame(os.urandom(200)),                                   # a frame of noise
    frame(b"\xfeSMB" + os.urandom(60)),                       # a broken header
    frame(header(5)),                                         # CREATE before NEGOTIATE/logon, no body
], ids=["truncated", "over-limit", "keepalive-type", "noise", "noise-frame", "broken-header",
        "create-first"])   # named: random bytes would name them differently in each process
def test_garbage_gets_a_clean_disconnect(server, data):
    exchange(server["port"], data)
    assert server["proc"].poll() is None
    assert "Traceback" not in server["log"].read_text()


def test_requests_without_a_session_get_a_status(server):
    out = exchange(server["port"], frame(negotiate()) + frame(header(5, 1, session_id=77) + b"\0" * 60))
    # negotiate answered, then CREATE refused with USER_SESSION_DELETED
    assert out[4:8] == b"\xfeSMB"
    second = out[4 + struct.unpack(">I", out[:4])[0]:]
    assert struct.unpack_from("<I", second, 4 + 8)[0] == 0xC0000203


def test_truncated_negotiate_body_is_refused_not_crashed(server):
    out = exchange(server["port"], frame(header(0) + b"\x24\x00"))
    assert out == b"" or struct.unpack_from("<I", out, 4 + 8)[0] != 0
    assert server["proc"].poll() is None


def test_server_still_serves_after_abuse(server):
    for _ in range(5):
        exchange(server["port"], os.urandom(1000))
    (server["share"] / "ok.txt").write_text("fine")
    r = smbclient(server, "ls")
    assert r.returncode == 0 and "ok.txt" in r.stdout
