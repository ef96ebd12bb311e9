"""IOCTL (MS-SMB2 3.3.5.15): the FSCTLs smbring answers. Those about the connection, and the
enumeration of previous versions (there are none), are here; those about an open file are in
`ioctl_copy` (server-side copy), `ioctl_sparse` (sparse files, compression, reparse points,
trim) and `ioctl_resilient` (resilient handles), each a function of the open that returns
the output buffer, or the steps (a generator of file-range effects) that end with it. Any
other FSCTL is STATUS_NOT_SUPPORTED (smbd 4.17 answers STATUS_INVALID_DEVICE_REQUEST on a
file handle, the object store's answer: either refuses it)."""
from __future__ import annotations

import ipaddress
import struct
import types
from functools import partial
from typing import TYPE_CHECKING

from smbring.smb import dfs, wire
from smbring.smb.channels import NetworkInterface
from smbring.smb.commands import ioctl_copy, ioctl_resilient, ioctl_sparse, pipe, tree
from smbring.smb.commands.negotiate import capabilities, security_mode
from smbring.smb.effects import Busy, FileSteps
from smbring.smb.errors import SMBError, in_request
from smbring.smb.fileinfo import ROOT_UUID
from smbring.smb.state import FID_ANY
from smbring.smb.wire import Header
from smbring.vfs import shadow_copy

if TYPE_CHECKING:
    from smbring.smb.connection import Connection


FSCTL_VALIDATE_NEGOTIATE_INFO = 0x00140204
FSCTL_QUERY_NETWORK_INTERFACE_INFO = 0x001401FC
FSCTL_DFS_GET_REFERRALS = 0x00060194
FSCTL_CREATE_OR_GET_OBJECT_ID = 0x000900C0
FSCTL_SRV_ENUMERATE_SNAPSHOTS = 0x00144064
SMB2_0_IOCTL_IS_FSCTL = 0x1
# FSCTL_SMBTORTURE | FSCTL_ACCESS_WRITE | 0x0040 | FSCTL_METHOD_NEITHER (Samba's smb_constants.h)
FSCTL_SMBTORTURE_FSP_ASYNC_SLEEP = 0x83848043


def enumerate_snapshots(c: Connection, hdr: Header, o, request, max_out: int, rhdr: Header) -> bytes:
    """FSCTL_SRV_ENUMERATE_SNAPSHOTS (MS-SMB2 3.3.5.15.1): the share's previous versions
    (vfs objects = shadow_copy2: vfs.shadow_copy), a SRV_SNAPSHOT_ARRAY of their @GMT tokens,
    newest first (shadow:sort). Asked with 16 bytes to answer in (as Windows asks first), or
    fewer than the tokens take: their count and the size they need, none returned (16 bytes). A share
    without snapshots answers none (the counts 0, the array an empty MULTI_SZ), not
    NOT_SUPPORTED, as Windows answers for a volume without shadow copies: Explorer's Previous
    Versions tab then lists nothing instead of an error. Less than 16 bytes to answer in:
    INVALID_PARAMETER."""
    if max_out < 16:
        raise SMBError(wire.STATUS_INVALID_PARAMETER)
    options = o.tree.share.shadow_copy if o.tree is not None and o.tree.share is not None else None
    times = [when for when, _directory in c.state.snapshots.of(options, o.tree.share.path)] if options else []
    tokens = b"".join(shadow_copy.token(when).encode("utf-16-le") + b"\0\0" for when in times) + b"\0\0"
    if max_out == 16 or 12 + len(tokens) > max_out:
        return struct.pack("<IIII", len(times), 0, len(tokens), 0)
    # (at least 16 bytes, as smbd answers: Samba's client takes fewer for a malformed answer)
    return (struct.pack("<III", len(times), len(times), len(tokens)) + tokens).ljust(16, b"\0")


def fsp_async_sleep(c: Connection, hdr: Header, o, request, max_out: int, rhdr: Header):
    """Samba's test hook (with `smbd:FSCTL_SMBTORTURE = yes` only, else NOT_SUPPORTED): the
    open is busy for as many milliseconds as the one byte sent says, as file I/O under way
    on it, so that a CLOSE sent meanwhile is seen to wait for it (Samba bug 14769)."""
    if not c.policy.smbtorture_fsctl:
        raise SMBError(wire.STATUS_NOT_SUPPORTED)
    if len(request) != 1:
        raise SMBError(wire.STATUS_INVALID_PARAMETER)
    return _busy(o.fd, request[0] / 1000)


def _busy(fd: int, seconds: float):
    yield Busy(fd, seconds)
    return b""


# the FSCTLs of an open file: (connection, header, open, input buffer, MaxOutputResponse,
# response header) -> output buffer, or steps ending with it
FILE_CONTROLS = {
    wire.FSCTL_SRV_REQUEST_RESUME_KEY: ioctl_copy.request_resume_key,
    wire.FSCTL_SRV_COPYCHUNK: partial(ioctl_copy.copychunk, ctl=wire.FSCTL_SRV_COPYCHUNK),
    wire.FSCTL_SRV_COPYCHUNK_WRITE:
        partial(ioctl_copy.copychunk, ctl=wire.FSCTL_SRV_COPYCHUNK_WRITE),
    ioctl_copy.FSCTL_DUPLICATE_EXTENTS_TO_FILE: ioctl_copy.duplicate_extents,
    ioctl_sparse.FSCTL_SET_SPARSE: ioctl_sparse.set_sparse,
    ioctl_sparse.FSCTL_SET_ZERO_DATA: ioctl_sparse.zero_data,
    ioctl_sparse.FSCTL_QUERY_ALLOCATED_RANGES: ioctl_sparse.query_allocated_ranges,
    ioctl_sparse.FSCTL_GET_COMPRESSION: ioctl_sparse.get_compression,
    ioctl_sparse.FSCTL_SET_COMPRESSION: ioctl_sparse.set_compression,
    ioctl_sparse.FSCTL_GET_REPARSE_POINT: ioctl_sparse.get_reparse_point,
    ioctl_sparse.FSCTL_FILE_LEVEL_TRIM: ioctl_sparse.file_level_trim,
    ioctl_resilient.FSCTL_LMR_REQUEST_RESILIENCY: ioctl_resilient.request_resiliency,
    FSCTL_SRV_ENUMERATE_SNAPSHOTS: enumerate_snapshots,
    FSCTL_SMBTORTURE_FSP_ASYNC_SLEEP: fsp_async_sleep,
}


def interface_info(interfaces: list[NetworkInterface]) -> bytes:
    """NETWORK_INTERFACE_INFO entries, chained by Next (MS-SMB2 2.2.32.5)."""
    out = bytearray()
    for i, iface in enumerate(interfaces):
        ip = ipaddress.ip_address(iface.address)
        if ip.version == 4:
            sockaddr = struct.pack("<HH", 0x2, 0) + ip.packed
        else:
            sockaddr = struct.pack("<HHI", 0x17, 0, 0) + ip.packed + b"\0" * 4
        following = INTERFACE_ENTRY if i < len(interfaces) - 1 else 0
        out += struct.pack("<IIIIQ", following, iface.index, iface.capability, 0, iface.speed)
        out += sockaddr.ljust(128, b"\0")
    return bytes(out)


INTERFACE_ENTRY = 152


def validate_negotiate(c: Connection, request, max_out: int) -> None:
    """FSCTL_VALIDATE_NEGOTIATE_INFO (MS-SMB2 3.3.5.15.12): what the client says it sent in
    NEGOTIATE must be what the server received, or someone in between changed it (a downgrade):
    the connection is dropped."""
    if c.dialect == wire.SMB311:
        raise ConnectionError("VALIDATE_NEGOTIATE_INFO on SMB 3.1.1 (preauth integrity covers it)")
    if max_out < 24 or len(request) < 24:
        raise ConnectionError("VALIDATE_NEGOTIATE_INFO: short request or response buffer")
    caps, guid, secmode, count = struct.unpack_from("<I16sHH", request, 0)
    dialects = struct.unpack_from(f"<{count}H", request, 24) if 24 + 2 * count <= len(request) else None
    # the very dialect list, as MS-SMB2 asks of a server that speaks 3.1.1 (and Samba checks)
    if (caps, guid, secmode, dialects) != (c.client_caps, c.client_guid, c.client_security_mode,
                                           tuple(c.client_dialects)):
        raise ConnectionError("VALIDATE_NEGOTIATE_INFO does not match the NEGOTIATE received")


def ioctl_response(ctl: int, fid: bytes, out: bytes, max_out: int) -> bytes:
    """The IOCTL response body carrying `out` (one that does not fit: BUFFER_TOO_SMALL)."""
    if len(out) > max_out:
        raise SMBError(wire.STATUS_BUFFER_TOO_SMALL)
    return struct.pack("<HHI16sIIIIII", 49, 0, ctl, fid, 112, 0, 112, len(out), 0, 0) + out


def respond_after(steps, ctl: int, fid: bytes, max_out: int):
    """The steps of a file control, then its response body."""
    out = yield from steps
    return ioctl_response(ctl, fid, out, max_out)


def h_ioctl(c: Connection, hdr: Header, msg: bytes, rhdr: Header, chain):
    _size, _r, ctl = struct.unpack_from("<HHI", msg, 64)
    fid = bytes(msg[72:88])
    in_off, in_len, _max_in, _out_off, _out_len, max_out, flags = struct.unpack_from("<IIIIIII", msg, 88)
    if flags != SMB2_0_IOCTL_IS_FSCTL:     # (MS-SMB2 3.3.5.15: no other value is valid)
        raise SMBError(wire.STATUS_NOT_SUPPORTED)
    if ctl in FILE_CONTROLS:
        o = c.open_for(fid, chain, hdr)
        out = FILE_CONTROLS[ctl](c, hdr, o, in_request(msg, in_off, in_len), max_out, rhdr)
        if isinstance(out, types.GeneratorType):
            return FileSteps(respond_after(out, ctl, fid, max_out)), None
        return ioctl_response(ctl, fid, out, max_out), None
    if ctl == FSCTL_VALIDATE_NEGOTIATE_INFO:
        validate_negotiate(c, in_request(msg, in_off, in_len), max_out)
        out = struct.pack("<I16sHH", capabilities(c, c.dialect), c.server_guid, security_mode(c), c.dialect)
    elif ctl == FSCTL_QUERY_NETWORK_INTERFACE_INFO:
        if fid != FID_ANY or in_len:
            raise SMBError(wire.STATUS_INVALID_PARAMETER)   # about the server, not a file (smbd)
        interfaces = c.state.sessions.network_interfaces
        if not interfaces and c.local_address:
            interfaces = [NetworkInterface(index=1, address=c.local_address.split("%", 1)[0])]
        if not interfaces:
            raise SMBError(wire.STATUS_NOT_SUPPORTED)
        out = interface_info(interfaces)
    elif ctl in (pipe.FSCTL_PIPE_TRANSCEIVE, pipe.FSCTL_PIPE_WAIT) and c.tree(hdr).fs is None:
        return pipe.h_ioctl(c, hdr, msg, rhdr, chain)
    elif ctl == FSCTL_DFS_GET_REFERRALS:
        if not c.policy.host_msdfs:
            raise SMBError(wire.STATUS_FS_DRIVER_REQUIRED)     # (no DFS: `host msdfs = no`)
        session = c.sessions[hdr.session_id]

        def dfs_root(name: str):
            found = tree.reachable(c, session, name)
            return found if found is not None and found.share.msdfs_root else None
        out = dfs.referrals(in_request(msg, in_off, in_len), max_out, dfs_root)
    elif ctl == FSCTL_CREATE_OR_GET_OBJECT_ID:
        o = c.open_for(fid, chain, hdr)
        st = o.tree.fs.fstat(o.fd)
        object_id = struct.pack("<QQ", st.st_ino, st.st_dev)
        out = object_id + ROOT_UUID + object_id + b"\0" * 16   # ObjectId, BirthVolumeId, BirthObjectId, DomainId
    else:
        if fid != FID_ANY or chain.related:
            c.open_for(fid, chain, hdr)   # a file-level control on a closed handle: FILE_CLOSED
        raise SMBError(wire.STATUS_NOT_SUPPORTED)
    return ioctl_response(ctl, fid, out, max_out), None
