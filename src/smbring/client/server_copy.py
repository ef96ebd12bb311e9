"""Server-side copy (MS-SMB2 3.2.4.20.2, 3.3.5.15.6): a file copied within the server, its data
never crossing the network. The source's open gives a resume key (FSCTL_SRV_REQUEST_RESUME_KEY);
FSCTL_SRV_COPYCHUNK_WRITE on the destination's open copies ranges of it, as many per request
as the server takes. A server that refuses the first request's size answers its limits
(STATUS_INVALID_PARAMETER with chunks per request, bytes per chunk and bytes per request),
and the copy goes on within them.

All or nothing: a copy that fails (refused, lost, or an answer that cannot be true) removes
the destination it made, so that no partial file is left looking like a copy.
"""
from __future__ import annotations

import asyncio

from smbring.smb import wire
from smbring.client import messages as m
from smbring.client.errors import ProtocolError, error_for

# what the first request asks for: Windows Server's and Samba's own limits (a server with
# smaller ones answers them, and the copy goes on within those)
FIRST_LIMITS = (256, 1 << 20, 16 << 20)     # chunks per request, bytes per chunk, per request
SMALLEST_CHUNK = 512                        # limits below this are taken for a lie


async def copy(client, src: str, dst: str, replace: bool = False) -> int:
    """Copies the file `src` to `dst` on the same share, in the server; returns the bytes
    copied. `replace`: an existing `dst` is overwritten (else FileExistsError). An answer
    that cannot be true raises ProtocolError and closes the connections (nothing more is
    asked of that server, not even the removal of what it made)."""
    async with client.opened(src, m.FILE_GENERIC_READ, wire.FILE_OPEN, wire.FILE_NON_DIRECTORY_FILE,
                             share=m.FILE_SHARE_READ) as source:
        r = await client.request(wire.IOCTL, m.resume_key_request(source.file_id),
                                 what=f"copy {src!r}: its resume key")
        key = m.parse_resume_key(r.message)
        async with client.opened(dst, m.FILE_GENERIC_WRITE | wire.DELETE,
                                 wire.FILE_OVERWRITE_IF if replace else wire.FILE_CREATE,
                                 wire.FILE_NON_DIRECTORY_FILE, share=0) as target:
            try:
                return await _chunks(client, key, target.file_id, source.size, f"copy {src!r} to {dst!r}")
            except ProtocolError:
                raise           # (a lie: `opened` closes the connections, and asks nothing more)
            except BaseException:
                if client.connected:
                    await asyncio.shield(_remove(client, target.file_id))
                raise


async def _chunks(client, key: bytes, target: bytes, size: int, what: str) -> int:
    """Copies `size` bytes from the file `key` names into `target`, from offset 0 on, in
    requests within the server's limits; the bytes copied."""
    most_chunks, chunk_size, request_size = FIRST_LIMITS
    told = False        # the server's limits taken already (a second refusal is an error)
    offset = 0
    while offset < size:
        chunks, at = [], offset
        while at < size and len(chunks) < most_chunks and at - offset < request_size:
            n = min(chunk_size, size - at, request_size - (at - offset))
            chunks.append((at, at, n))
            at += n
        asked = at - offset
        r = await client.request(wire.IOCTL, m.copychunk_request(target, key, chunks),
                                 expect=(wire.STATUS_SUCCESS, wire.STATUS_INVALID_PARAMETER), what=what)
        if r.status == wire.STATUS_INVALID_PARAMETER:
            if told or len(r.message) < wire.HEADER_SIZE + 48:
                raise error_for(r.status, what)     # (an error body: no limits in it)
            most_chunks, chunk_size, request_size = m.parse_copychunk(r.message)
            if min(chunk_size, request_size) < SMALLEST_CHUNK or not most_chunks:
                raise ProtocolError(f"{what}: the server's copy limits ({most_chunks} chunks of "
                                    f"{chunk_size} bytes, {request_size} bytes a request) "
                                    f"allow no copy")
            told = True
            continue
        _chunks_written, _partial, total = m.parse_copychunk(r.message)
        if total > asked or not total:
            raise ProtocolError(f"{what}: the server says it copied {total} bytes of the "
                                f"{asked} asked")
        offset += total
    return size


async def _remove(client, file_id: bytes) -> None:
    """The destination of a failed copy goes when it is closed (as far as the server lets it)."""
    try:
        await client.set_info(file_id, m.FILE_DISPOSITION_INFORMATION, b"\x01")
    except (OSError, ConnectionError):
        pass
