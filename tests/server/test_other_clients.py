"""Clients other than smbclient and smbprotocol against a real `smbring serve`: pysmb (which
opens with an SMB1 NEGOTIATE offering only "SMB 2.002" and then speaks SMB 2.0.2) and impacket
(SMB2 NEGOTIATE first, or an SMB1 NEGOTIATE offering "SMB 2.???" with `preferredDialect=None`)
connect, list, store, fetch, rename, delete and make and remove directories.

Also the SMB1 NEGOTIATE itself (MS-SMB2 3.3.5.3.1): 2.0.2 or the 0x02FF wildcard as the
client offered, a 2.0.2 connection told 64 KiB reads and writes, an SMB1-only client
disconnected, and hostile SMB1 frames answered with a disconnect, never a crash."""
from __future__ import annotations

import io
import os
import socket
import struct
import sys
from pathlib import Path

import pytest

from servers import PASSWORD, USER
from smbcore import smb1_negotiate_message
from smbring.smb import wire

sys.path.insert(0, str(Path(__file__).parent.parent / "security"))   # raw.py
from raw import Disconnected, RawClient  # noqa: E402

BIG = os.urandom(300_000)     # several 64 KiB reads and writes for a 2.0.2 connection


# -- pysmb ---------------------------------------------------------------------------------
@pytest.fixture
def pysmb(server):
    smbconnection = pytest.importorskip("smb.SMBConnection")
    conn = smbconnection.SMBConnection(USER, PASSWORD, "client", "SMBRING", domain="",
                                       use_ntlm_v2=True, is_direct_tcp=True)
    assert conn.connect("127.0.0.1", server["port"], timeout=15)
    yield conn
    conn.close()


def pysmb_names(conn, path="/"):
    return {f.filename for f in conn.listPath("share", path)} - {".", ".."}


def test_pysmb_speaks_smb_2_0_2(pysmb, server):
    assert pysmb.isUsingSMB2
    assert "negotiated dialect 0x202" in server["log"].read_text()
    assert pysmb.max_read_size == 65536 and pysmb.max_write_size == 65536


def test_pysmb_file_operations(pysmb, server):
    share = server["share"]
    (share / "there.txt").write_bytes(b"already here")
    assert pysmb_names(pysmb) == {"there.txt"}

    assert pysmb.storeFile("share", "/big.bin", io.BytesIO(BIG)) == len(BIG)
    assert (share / "big.bin").read_bytes() == BIG
    got = io.BytesIO()
    _attrs, size = pysmb.retrieveFile("share", "/big.bin", got)
    assert size == len(BIG) and got.getvalue() == BIG

    pysmb.createDirectory("share", "/sub")
    assert (share / "sub").is_dir()
    pysmb.rename("share", "/big.bin", "/sub/moved.bin")
    assert not (share / "big.bin").exists() and (share / "sub" / "moved.bin").read_bytes() == BIG
    assert pysmb_names(pysmb, "/sub") == {"moved.bin"}

    pysmb.deleteFiles("share", "/sub/moved.bin")
    assert not (share / "sub" / "moved.bin").exists()
    pysmb.deleteDirectory("share", "/sub")
    assert not (share / "sub").exists()
    assert pysmb_names(pysmb) == {"there.txt"}


def test_pysmb_errors_are_reported(pysmb):
    from smb.smb_structs import OperationFailure
    with pytest.raises(OperationFailure):
        pysmb.retrieveFile("share", "/missing.txt", io.BytesIO())
    with pytest.raises(OperationFailure):
        pysmb.deleteDirectory("share", "/missing")


# -- impacket ------------------------------------------------------------------------------
@pytest.fixture(params=["smb2-first", "smb1-first"])
def impacket(server, request):
    smbconnection = pytest.importorskip("impacket.smbconnection")
    if request.param == "smb1-first":   # an SMB1 NEGOTIATE offering "SMB 2.002" and "SMB 2.???"
        conn = smbconnection.SMBConnection("127.0.0.1", "127.0.0.1", sess_port=server["port"],
                                           preferredDialect=None)
    else:
        conn = smbconnection.SMBConnection("127.0.0.1", "127.0.0.1", sess_port=server["port"],
                                           preferredDialect=smbconnection.SMB2_DIALECT_21)
    conn.login(USER, PASSWORD, domain="")
    yield conn
    conn.close()



def impacket_names(conn, pattern="*"):
    return {f.get_longname() for f in conn.listPath("share", pattern)} - {".", ".."}


def test_impacket_negotiates_smb2(impacket):
    from impacket.smb import SMB_DIALECT
    assert impacket.getDialect() != SMB_DIALECT


def test_impacket_file_operations(impacket, server):
    share = server["share"]
    (share / "there.txt").write_bytes(b"already here")
    assert impacket_names(impacket) == {"there.txt"}

    impacket.putFile("share", "big.bin", io.BytesIO(BIG).read)
    assert (share / "big.bin").read_bytes() == BIG
    got = io.BytesIO()
    impacket.getFile("share", "big.bin", got.write)
    assert got.getvalue() == BIG

    impacket.createDirectory("share", "sub")
    assert (share / "sub").is_dir()
    impacket.rename("share", "big.bin", "sub\\moved.bin")
    assert (share / "sub" / "moved.bin").read_bytes() == BIG
    assert impacket_names(impacket, "sub\\*") == {"moved.bin"}

    impacket.deleteFile("share", "sub\\moved.bin")
    impacket.deleteDirectory("share", "sub")
    assert not (share / "sub").exists()
    assert impacket_names(impacket) == {"there.txt"}


def test_impacket_errors_are_reported(impacket):
    from impacket.smbconnection import SessionError
    with pytest.raises(SessionError) as failure:
        impacket.getFile("share", "missing.txt", io.BytesIO().write)
    assert "STATUS_OBJECT_NAME_NOT_FOUND" in str(failure.value)
    with pytest.raises(SessionError) as failure:
        impacket.createDirectory("share", "no\\such\\parent")
    assert "STATUS_OBJECT_PATH_NOT_FOUND" in str(failure.value)


# -- the SMB1 NEGOTIATE on the wire ----------------------------------------------------------
def smb1_answer(server, dialects) -> RawClient:
    c = RawClient(server["port"])
    smb1 = smb1_negotiate_message(dialects)
    c.send_frame(len(smb1).to_bytes(4, "big") + smb1)
    return c


def negotiate_fields(r):
    (_size, _secmode, dialect, _n, _guid, _caps, max_transact, max_read, max_write) = \
        struct.unpack_from("<HHHH16sIIII", r.raw, 64)
    return dialect, max_transact, max_read, max_write


def test_smb1_negotiate_offering_2_002_alone_is_answered_2_0_2_with_64k_io(server):
    with smb1_answer(server, (b"NT LM 0.12", b"SMB 2.002")) as c:
        r = c.response_to(0)
        assert r.status == wire.STATUS_SUCCESS and r.header.command == wire.NEGOTIATE
        assert negotiate_fields(r) == (wire.SMB202, 65536, 65536, 65536)
        with pytest.raises((Disconnected, OSError)):     # the dialect is settled: no second one
            c.next_message_id = 1
            c.negotiate()


def test_smb1_negotiate_offering_the_wildcard_is_answered_0x02ff(server):
    with smb1_answer(server, (b"NT LM 0.12", b"SMB 2.002", b"SMB 2.???")) as c:
        r = c.response_to(0)
        assert r.status == wire.STATUS_SUCCESS and negotiate_fields(r)[0] == wire.WILDCARD_DIALECT
        c.next_message_id = 1              # the SMB2 NEGOTIATE that follows is MessageId 1
        r = c.negotiate()
        assert r.status == wire.STATUS_SUCCESS and c.dialect == wire.SMB311
        assert c.server["max_read"] > 65536
        c.logon(USER, PASSWORD)


def test_a_2_0_2_connection_refuses_a_read_over_64k(server):
    (server["share"] / "f.bin").write_bytes(BIG)
    c = RawClient(server["port"])
    with c:
        c.negotiate((wire.SMB202,))
        assert c.server["max_read"] == 65536
        tree = c.tree(c.logon(USER, PASSWORD), "share")
        fid = tree.open("f.bin")
        assert tree.read(fid, 65536).status == wire.STATUS_SUCCESS
        assert tree.read(fid, 65537).status == wire.STATUS_INVALID_PARAMETER


@pytest.mark.parametrize("dialects", [(b"NT LM 0.12",), (b"PC NETWORK PROGRAM 1.0", b"LANMAN1.0"), ()])
def test_smb1_only_client_is_disconnected(server, dialects):
    with smb1_answer(server, dialects) as c:
        with pytest.raises((Disconnected, OSError)):
            c.response_to(0)
    assert server["proc"].poll() is None


def smb1_frame(command=0x72, word_count=0, names=b"\x02SMB 2.???\0", byte_count=None, header=b"\xffSMB"):
    head = struct.pack("<4sBIBHH8sHHHHH", header, command, 0, 0x18, 0xC853, 0, b"\0" * 8, 0,
                       0xFFFF, 1, 0, 0)
    words = struct.pack("<B", word_count) + b"\0" * (2 * word_count)
    count = len(names) if byte_count is None else byte_count
    return head + words + struct.pack("<H", count) + names


HOSTILE = {
    "header only": smb1_frame()[:32],
    "no byte count": smb1_frame()[:33],
    "byte count past the end": smb1_frame(byte_count=4000),
    "not NEGOTIATE": smb1_frame(command=0x73),
    "words before the dialects": smb1_frame(word_count=3),
    "wildcard without its 0x02": smb1_frame(names=b"SMB 2.???\0"),
    "wildcard unterminated": smb1_frame(names=b"\x02SMB 2.???"),
    "wildcard inside another name": smb1_frame(names=b"\x02xxSMB 2.???yy\0"),
    "wildcard after the byte count": smb1_frame(names=b"\x02NT LM 0.12\0\x02SMB 2.???\0", byte_count=12),
    "thousands of names": smb1_frame(names=b"\x02A\0" * 10000),
    "no names at all": smb1_frame(names=b""),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_smb1_frames_are_disconnected_and_the_server_lives(server, name):
    frame = HOSTILE[name]
    with RawClient(server["port"]) as c:
        c.send_frame(len(frame).to_bytes(4, "big") + frame)
        with pytest.raises((Disconnected, OSError)):
            c.response_to(0)
    assert server["proc"].poll() is None
    with RawClient(server["port"]) as c:                   # still serving
        assert c.negotiate().status == wire.STATUS_SUCCESS


def test_smb1_negotiate_twice_is_disconnected(server):
    with smb1_answer(server, (b"SMB 2.???",)) as c:
        assert c.response_to(0).status == wire.STATUS_SUCCESS
        with pytest.raises((Disconnected, OSError)):
            smb1 = smb1_negotiate_message((b"SMB 2.???",))
            c.send_frame(len(smb1).to_bytes(4, "big") + smb1)
            c.response_to(0)


def test_smb1_after_smb2_negotiate_is_disconnected(server):
    with RawClient(server["port"]) as c:
        c.negotiate()
        smb1 = smb1_negotiate_message()
        with pytest.raises((Disconnected, OSError)):
            c.send_frame(len(smb1).to_bytes(4, "big") + smb1)
            c.response_to(0)


def test_a_frame_under_an_smb1_header_is_refused(server):
    with socket.create_connection(("127.0.0.1", server["port"]), timeout=10) as s:
        s.sendall(b"\0\0\0\x08\xffSMBr\0\0\0")
        try:
            assert s.recv(100) == b""
        except ConnectionResetError:
            pass                                            # closed either way
    assert server["proc"].poll() is None
