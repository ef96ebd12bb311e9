"""A named pipe acts as its session acts now: after a re-authentication as someone else (as
smbd allows it: smb2.session.reauth2-6), an RPC call on a pipe opened before is answered as
the new logon, as every other request of the session is, not as the one that opened the
pipe. Here a user's srvsvc pipe, the session re-authenticated anonymously under `restrict
anonymous = 1`, may no longer list shares (WERR_ACCESS_DENIED), and may again once the
session is the user's again. Real server; the raw client of tests/security (no client
library re-authenticates), impacket's NDR for the calls."""
from __future__ import annotations

import struct
import sys
from pathlib import Path

import pytest

from servers import PASSWORD, USER
from smbconf_server import smbconf  # noqa: F401  (the fixture)

from smbring.smb import wire

sys.path.insert(0, str(Path(__file__).parent.parent / "smb"))         # rpc_client.py
sys.path.insert(0, str(Path(__file__).parent.parent / "security"))    # logon.py
pytest.importorskip("impacket")
from logon import ANONYMOUS, V1_FLAGS, forged_logon  # noqa: E402
from rpc_client import (FSCTL_PIPE_TRANSCEIVE, NDR, SRVSVC, bind_pdu, ptype, request_pdu,  # noqa: E402
                        response_stub, rpcrt, share_enum, split_pdus)

WERR_OK, WERR_ACCESS_DENIED = 0, 5
NET_SHARE_ENUM_ALL = 15


def share_enum_status(tree, fid) -> int:
    r = tree.ioctl(fid, FSCTL_PIPE_TRANSCEIVE, request_pdu(NET_SHARE_ENUM_ALL, share_enum(1)))
    assert r.status == wire.STATUS_SUCCESS, r
    return struct.unpack("<I", response_stub(split_pdus(r.buffer(32, "<II")))[-4:])[0]


def test_a_pipe_answers_as_the_session_after_a_reauthentication(smbconf):
    server = smbconf("restrict anonymous = 1", {"share": "read only = no"})
    c = server.raw()
    assert c.negotiate((wire.SMB311,)).status == wire.STATUS_SUCCESS
    s = c.logon(USER, PASSWORD)
    ipc = c.tree(s, "IPC$")
    fid = ipc.open("srvsvc", 0x0012019F)
    r = ipc.ioctl(fid, FSCTL_PIPE_TRANSCEIVE, bind_pdu(((SRVSVC, (NDR,)),)))
    assert r.status == wire.STATUS_SUCCESS, r
    assert ptype(r.buffer(32, "<II")) == rpcrt.MSRPC_BINDACK
    assert share_enum_status(ipc, fid) == WERR_OK
    r = forged_logon(c, "", lambda _challenge: (b"", b""), flags=V1_FLAGS | ANONYMOUS, session=s).last
    assert r.status == wire.STATUS_SUCCESS, r
    assert share_enum_status(ipc, fid) == WERR_ACCESS_DENIED      # the pipe is anonymous's now
    ctx, s, r = c.begin_logon(USER, PASSWORD, session=s)
    while r.status == wire.STATUS_MORE_PROCESSING_REQUIRED:
        r = c.session_setup(s, ctx.step(c.security_buffer(r)))
    assert r.status == wire.STATUS_SUCCESS, r
    assert share_enum_status(ipc, fid) == WERR_OK
    c.close()
