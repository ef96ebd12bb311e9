"""A request shorter than its header and its body's StructureSize (66 bytes) drops the
connection on the short path of a lone request and on the general one alike, as Samba's
smbd_smb2_inbuf_parse_compound refuses it (tests/security/test_compound_framing.py sends
such frames to a real server)."""
import pytest
from sansio_client import Client

from smbring.smb import wire


def general_path(conn, frame) -> list:
    return conn._drive(conn._frame(memoryview(frame), None), None)


@pytest.mark.parametrize("body", [b"", b"\x04"], ids=["header-only", "one-byte-body"])
@pytest.mark.parametrize("path", ["short", "general"])
def test_a_request_without_its_structure_size_drops_the_connection(tmp_path, body, path):
    c = Client(tmp_path, credits=4)
    try:
        frame = c.message(wire.ECHO, body)
        handle = (lambda f: c.conn.handle_frame(memoryview(f))) if path == "short" else \
            (lambda f: general_path(c.conn, f))
        with pytest.raises(ConnectionError, match="StructureSize"):
            handle(frame)
    finally:
        c.conn.close_all()
