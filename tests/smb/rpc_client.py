"""DCE/RPC for the sans-I/O tests: PDUs built, and answers read, with impacket's DCE/RPC and
NDR structures (an implementation independent of smbring's), and a client of the named pipes
of a sans-I/O connection's IPC$."""
import struct

import pytest
from sansio_client import Client, buffer
from smbcore import create_body, ioctl_body, read_body, write_body

from smbring.smb import wire

rpcrt = pytest.importorskip("impacket.dcerpc.v5.rpcrt")
from impacket.dcerpc.v5 import srvs, wkst  # noqa: E402
from impacket.dcerpc.v5.dtypes import NULL  # noqa: E402
from impacket.uuid import uuidtup_to_bin  # noqa: E402

NDR = uuidtup_to_bin(("8a885d04-1ceb-11c9-9fe8-08002b104860", "2.0"))
NDR64 = uuidtup_to_bin(("71710533-beba-4937-8319-b5dbef9ccc36", "1.0"))
BIND_TIME_FEATURES = uuidtup_to_bin(("6cb71c2c-9812-4540-0300-000000000000", "1.0"))
SRVSVC, WKSSVC = srvs.MSRPC_UUID_SRVS, wkst.MSRPC_UUID_WKST
UNKNOWN_INTERFACE = uuidtup_to_bin(("12345778-1234-abcd-ef00-0123456789ab", "1.0"))   # lsarpc

FSCTL_PIPE_TRANSCEIVE = 0x0011C017
FIRST, LAST = 0x01, 0x02


def bind_pdu(contexts=((SRVSVC, (NDR,)),), call_id=1, max_xmit=4280, max_recv=4280, assoc_group=0,
             ptype=None) -> bytes:
    """A BIND (or, with ptype, an ALTER_CONTEXT) proposing (interface, transfer syntaxes) each,
    laid out by hand after C706 12.6.4.3 (impacket's CtxItem holds one transfer syntax only)."""
    body = struct.pack("<HHIBBH", max_xmit, max_recv, assoc_group, len(contexts), 0, 0)
    for context_id, (interface, transfers) in enumerate(contexts):
        body += struct.pack("<HBB", context_id, len(transfers), 0) + interface + b"".join(transfers)
    kind = rpcrt.MSRPC_BIND if ptype is None else ptype
    return struct.pack("<BBBB4sHHI", 5, 0, kind, FIRST | LAST, b"\x10\0\0\0", 16 + len(body), 0, call_id) + body


def request_pdu(opnum: int, stub: bytes, call_id=2, context_id=0, flags=FIRST | LAST, alloc_hint=None) -> bytes:
    r = rpcrt.MSRPCRequestHeader()
    r["op_num"], r["ctx_id"], r["call_id"], r["flags"] = opnum, context_id, call_id, flags
    r["pduData"] = stub
    r["alloc_hint"] = len(stub) if alloc_hint is None else alloc_hint
    return r.getData()


def split_pdus(data: bytes) -> list[bytes]:
    """The PDUs in what a pipe returned, by their frag_length."""
    pdus = []
    while data:
        length = struct.unpack_from("<H", data, 8)[0]
        pdus.append(data[:length])
        data = data[length:]
    return pdus


def ptype(pdu: bytes) -> int:
    return pdu[2]


def ack_results(pdu: bytes) -> list[tuple[int, int, bytes]]:
    """A BIND_ACK's or ALTER_CONTEXT_RESP's (result, reason, transfer syntax) per context."""
    ack = rpcrt.MSRPCBindAck(pdu)
    results = []
    for i in range(ack["ctx_num"]):
        item = rpcrt.CtxItemResult(ack["ctx_items"][i * 24:(i + 1) * 24])
        results.append((item["Result"], item["Reason"], item["TransferSyntax"]))
    return results


def fault_status(pdu: bytes) -> int:
    assert ptype(pdu) == rpcrt.MSRPC_FAULT, ptype(pdu)
    return struct.unpack_from("<I", pdu, 24)[0]


def response_stub(pdus: list[bytes]) -> bytes:
    """The stub data of a call's RESPONSE fragments, joined (each checked to be one)."""
    stub = b""
    for i, pdu in enumerate(pdus):
        assert ptype(pdu) == rpcrt.MSRPC_RESPONSE, ptype(pdu)
        assert bool(pdu[3] & FIRST) == (i == 0) and bool(pdu[3] & LAST) == (i == len(pdus) - 1)
        stub += rpcrt.MSRPCRespHeader(pdu)["pduData"]
    return stub


# -- the NDR requests of the calls served, as impacket writes them -----------------------------
def share_enum(level: int, resume=None, opnum=15) -> bytes:
    req = srvs.NetrShareEnum() if opnum == 15 else srvs.NetrShareEnumSticky()
    req["ServerName"] = "\\\\server\x00"
    req["InfoStruct"]["Level"] = level
    req["InfoStruct"]["ShareInfo"]["tag"] = level
    req["InfoStruct"]["ShareInfo"][f"Level{level}"]["Buffer"] = NULL
    req["PreferedMaximumLength"] = 0xFFFFFFFF
    req["ResumeHandle"] = NULL if resume is None else resume
    return req.getData()


def share_get_info(name: str, level: int) -> bytes:
    req = srvs.NetrShareGetInfo()
    req["ServerName"] = NULL
    req["NetName"] = name + "\x00"
    req["Level"] = level
    return req.getData()


def server_get_info(level: int) -> bytes:
    req = srvs.NetrServerGetInfo()
    req["ServerName"] = NULL
    req["Level"] = level
    return req.getData()


def wksta_get_info(level: int) -> bytes:
    req = wkst.NetrWkstaGetInfo()
    req["ServerName"] = NULL
    req["Level"] = level
    return req.getData()


def text(value) -> str:
    """An NDR string as impacket reads it, without its terminator."""
    return value[:-1] if value.endswith("\x00") else value


class PipeClient(Client):
    """A sans-I/O client with a tree on IPC$ (self.ipc) beside the share's."""

    def __init__(self, share_dir, **options):
        super().__init__(share_dir, **options)
        status, self.ipc, _body = self.tree_connect("\\\\x\\IPC$")
        assert status == 0

    def open_pipe(self, name="srvsvc", **kw):
        """(status, FileId) of a CREATE on IPC$."""
        body = create_body(name, 0x0012019F, wire.FILE_OPEN, 0)      # read, write, attributes, EAs
        status, out = self.request(wire.CREATE, body, tree_id=self.ipc, **kw)
        return status, (out[64:80] if status == 0 else None)

    def pipe(self, name="srvsvc") -> bytes:
        status, fid = self.open_pipe(name)
        assert status == 0, hex(status)
        return fid

    def pipe_write(self, fid, data: bytes) -> int:
        return self.request(wire.WRITE, write_body(fid, data), tree_id=self.ipc)[0]

    def pipe_read(self, fid, length=65536):
        """(status, data) of a READ answered at once (STATUS_PENDING: no data)."""
        status, body = self.request(wire.READ, read_body(fid, length), tree_id=self.ipc)
        return status, (buffer(body, 2, "<BxI")[:] if status == 0 else b"")

    def transceive(self, fid, data: bytes, max_output=65536):
        status, body = self.request(wire.IOCTL, ioctl_body(fid, FSCTL_PIPE_TRANSCEIVE, data, max_output),
                                    tree_id=self.ipc)
        ok = status in (0, wire.STATUS_BUFFER_OVERFLOW)
        return status, (buffer(body, 32, "<II") if ok else b"")

    def bound(self, name="srvsvc", **bind) -> bytes:
        """A pipe whose association accepted a BIND of its interface."""
        fid = self.pipe(name)
        status, out = self.transceive(fid, bind_pdu(((WKSSVC if name == "wkssvc" else SRVSVC, (NDR,)),), **bind))
        assert status == 0 and ptype(out) == rpcrt.MSRPC_BINDACK, (hex(status), out)
        return fid

    def call(self, fid, opnum: int, stub: bytes, call_id=2) -> bytes:
        """A call's response stub data (its fragments read until the last)."""
        status, out = self.transceive(fid, request_pdu(opnum, stub, call_id))
        data = out
        while status == wire.STATUS_BUFFER_OVERFLOW or not split_pdus(data)[-1][3] & LAST:
            status, more = self.pipe_read(fid)
            assert status == 0, hex(status)
            data += more
        return response_stub(split_pdus(data))
