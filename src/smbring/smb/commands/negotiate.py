"""NEGOTIATE, the SMB1 multi-protocol NEGOTIATE that precedes it, and the response header
the preauthentication hash covers (MS-SMB2 3.3.5.3, 3.3.5.4)."""
from __future__ import annotations

import logging
import os
import struct
import time
from typing import TYPE_CHECKING

from smbring.smb import ntlm, security, wire
from smbring.smb.errors import SMBError, in_request
from smbring.smb.limits import MAX_IO_SMB202
from smbring.smb.wire import Header

if TYPE_CHECKING:
    from smbring.smb.connection import Connection

log = logging.getLogger("smbring.smb")
# the NEGOTIATE response's hint: NTLMSSP only, or Kerberos first where the server offers it
SPNEGO_INIT = {False: ntlm.negotiate_token(False), True: ntlm.negotiate_token(True)}


def h_negotiate(c: Connection, hdr: Header, msg: bytes, rhdr: Header, _):
    if c.dialect:
        raise ConnectionError("second NEGOTIATE")
    size, count, secmode, _r, caps, guid, ctx_off, ctx_count = struct.unpack_from("<HHHHI16sIH", msg, 64)
    if not count:
        raise SMBError(wire.STATUS_INVALID_PARAMETER)
    dialects = struct.unpack_from(f"<{count}H", msg, 64 + 36)
    policy = c.policy
    # the highest dialect both sides speak within server min/max protocol
    chosen = next((d for d in wire.DIALECTS if d in dialects and policy.allows(d)), None)
    if chosen is None:
        log.info("NEGOTIATE refused: no dialect of %s within server min/max protocol",
                 [hex(d) for d in dialects])
        raise SMBError(wire.STATUS_NOT_SUPPORTED)
    encrypting = policy.encryption != "off"
    cipher, signing_algorithm, offered = 0, None, []
    if chosen in (wire.SMB300, wire.SMB302) and caps & wire.CAP_ENCRYPTION and encrypting \
            and security.AES_128_CCM in policy.ciphers:
        cipher = security.AES_128_CCM
    if chosen == wire.SMB311:       # the contexts are read before anything is settled
        pos, seen = ctx_off, []
        for _ in range(ctx_count):
            ctype, dlen = struct.unpack_from("<HH", msg, pos)
            data = in_request(msg, pos + 8, dlen)
            seen.append(ctype)
            if ctype == wire.PREAUTH_INTEGRITY_CAPABILITIES:
                n = struct.unpack_from("<H", data, 0)[0]
                if wire.SHA512 not in struct.unpack_from(f"<{n}H", data, 4):
                    raise SMBError(wire.STATUS_SMB_NO_PREAUTH_INTEGRITY_HASH_OVERLAP)
            elif ctype == wire.ENCRYPTION_CAPABILITIES:
                n = struct.unpack_from("<H", data, 0)[0]
                offered = list(struct.unpack_from(f"<{n}H", data, 2))
            elif ctype == wire.SIGNING_CAPABILITIES:
                n = struct.unpack_from("<H", data, 0)[0]
                algs = struct.unpack_from(f"<{n}H", data, 2)
                signing_algorithm = next((a for a in policy.signing_algorithms if a in algs), None)
            pos = wire.pad8(pos + 8 + dlen)
        if seen.count(wire.PREAUTH_INTEGRITY_CAPABILITIES) != 1 or \
                seen.count(wire.ENCRYPTION_CAPABILITIES) > 1 or seen.count(wire.SIGNING_CAPABILITIES) > 1:
            # exactly one preauth context, at most one of the others (MS-SMB2 3.3.5.4): the
            # keys hang on the hash it announces
            raise SMBError(wire.STATUS_INVALID_PARAMETER)
        if encrypting:
            cipher = next((x for x in policy.ciphers if x in offered), 0)
    c.dialect, c.client_guid, c.client_security_mode, c.client_caps = chosen, guid, secmode, caps
    c.client_dialects, c.cipher, c.signing_algorithm = dialects, cipher, signing_algorithm
    c.join_client()     # an SMB 3 connection shares its client's sessions (multichannel)
    contexts = []
    if chosen == wire.SMB311:
        c.preauth.update(msg)
        salt = os.urandom(32)
        preauth = struct.pack("<HHI", wire.PREAUTH_INTEGRITY_CAPABILITIES, 38, 0) + \
            struct.pack("<HHH", 1, 32, wire.SHA512) + salt
        contexts.append(preauth)
        if offered:
            contexts.append(struct.pack("<HHIHH", wire.ENCRYPTION_CAPABILITIES, 4, 0, 1, c.cipher))
        if c.signing_algorithm is not None:
            contexts.append(struct.pack("<HHIHH", wire.SIGNING_CAPABILITIES, 4, 0, 1, c.signing_algorithm))
    body = negotiate_body(c, chosen, contexts)
    log.info("negotiated dialect %#x, cipher %d, signing %s", chosen, c.cipher,
             c.signing_algorithm if c.signing_algorithm is not None else "by dialect")
    if chosen == wire.SMB311:
        full = rhdr_bytes(rhdr, hdr, body)
        c.preauth.update(full)
    return body, None


def rhdr_bytes(rhdr: Header, req: Header, body: bytes) -> bytes:
    """The response as it will be sent (for the preauth hash): same fields as _finish sets."""
    h = Header(**{k: getattr(rhdr, k) for k in rhdr.__dataclass_fields__})
    h.flags |= wire.FLAGS_SERVER_TO_REDIR
    h.message_id = req.message_id
    h.credit_charge = req.credit_charge
    return h.pack() + body


SMB1_NEGOTIATE = 0x72
SMB1_HEADER = struct.Struct("<4sB27x")     # Protocol, Command; the rest is not read
SMB2_WILDCARD_NAME, SMB202_NAME = b"SMB 2.???", b"SMB 2.002"


def smb1_dialect_names(frame: bytes) -> list[bytes]:
    """The dialect strings of an SMB1 NEGOTIATE request ([MS-CIFS] 2.2.4.52.1: no parameter
    words, then ByteCount bytes of 0x02-prefixed, NUL-terminated names). Anything else is a
    ConnectionError: the connection's first frame claims to be SMB1, and only this is read."""
    if len(frame) < SMB1_HEADER.size + 3:
        raise ConnectionError("SMB1 frame too short for a NEGOTIATE")
    _protocol, command = SMB1_HEADER.unpack_from(frame)
    word_count = frame[SMB1_HEADER.size]
    if command != SMB1_NEGOTIATE or word_count != 0:
        raise ConnectionError(f"SMB1 command {command:#x} (word count {word_count}), not NEGOTIATE")
    (byte_count,) = struct.unpack_from("<H", frame, SMB1_HEADER.size + 1)
    start = SMB1_HEADER.size + 3
    data = frame[start:start + byte_count]
    if len(data) != byte_count:
        raise ConnectionError("SMB1 NEGOTIATE's ByteCount runs past the frame")
    names, pos = [], 0
    while pos < len(data):
        end = data.find(b"\0", pos)
        if data[pos] != 0x02 or end < 0:
            raise ConnectionError("SMB1 NEGOTIATE with a malformed dialect string")
        names.append(data[pos + 1:end])
        pos = end + 1
    return names


def smb1_negotiate(c: Connection, frame: bytes) -> bytes:
    """A multi-protocol NEGOTIATE (MS-SMB2 3.3.5.3.1), only as a connection's first frame.
    SMB1 itself is not spoken: a client that offers no SMB2 dialect is disconnected."""
    if c.dialect or c.smb1_negotiated:
        raise ConnectionError("SMB1 NEGOTIATE after the first frame")
    names = smb1_dialect_names(frame)
    if SMB2_WILDCARD_NAME in names:
        dialect = wire.WILDCARD_DIALECT     # an SMB2 NEGOTIATE follows with the real list
    elif SMB202_NAME in names:
        if not c.policy.allows(wire.SMB202):
            raise ConnectionError("SMB 2.0.2 only client, below server min protocol")
        dialect = wire.SMB202               # settled: the client goes on with SESSION_SETUP
    else:
        raise ConnectionError(f"SMB1 only client (offered {names[:8]})")
    c.smb1_negotiated = True
    c.credits.start_after_smb1_negotiate()
    body = negotiate_body(c, dialect, [])
    if dialect == wire.SMB202:
        c.dialect = dialect
        log.info("negotiated dialect %#x (from an SMB1 NEGOTIATE)", dialect)
    hdr = Header(command=wire.NEGOTIATE, flags=wire.FLAGS_SERVER_TO_REDIR, credits=1)
    return hdr.pack() + body


def capabilities(c: Connection, dialect: int) -> int:
    """What NEGOTIATE announced (and FSCTL_VALIDATE_NEGOTIATE_INFO must repeat exactly)."""
    caps = wire.CAP_LARGE_MTU if dialect >= wire.SMB210 else 0
    if dialect >= wire.SMB210 and c.policy.smb2_leases:
        caps |= wire.CAP_LEASING
        if dialect >= wire.SMB300 and offers_directory_leasing(c):
            caps |= wire.CAP_DIRECTORY_LEASING      # (see smb.dirleases)
    if dialect in (wire.SMB300, wire.SMB302) and c.cipher:
        caps |= wire.CAP_ENCRYPTION
    if dialect >= wire.SMB300 and c.policy.multi_channel:
        caps |= wire.CAP_MULTI_CHANNEL      # sessions bind further connections (smb.channels)
    if c.policy.host_msdfs:
        caps |= wire.CAP_DFS                # (as Samba: `host msdfs`, on by default; smb.dfs)
    return caps


def offers_directory_leasing(c: Connection) -> bool:
    """Directory leases for this connection: `smb3 directory leases` on, where the server sees
    every change that must break them (`Oplocks.breaks_directories`: one process, or the
    workers' shared store), and asked
    for by the client's own capabilities, as Samba grants them (a client that does not say it
    knows them never meets the capability: impacket 0.13.1 fails every open of a share root's
    names against a server that announces it)."""
    return bool(c.policy.directory_leases and c.state.oplocks.breaks_directories
                and c.client_caps & wire.CAP_DIRECTORY_LEASING)


def security_mode(c: Connection) -> int:
    """The server's SecurityMode (NEGOTIATE, and again in VALIDATE_NEGOTIATE_INFO)."""
    return wire.SECURITY_SIGNING_ENABLED | (wire.SECURITY_SIGNING_REQUIRED if c.signing_required else 0)


def negotiate_body(c: Connection, dialect: int, contexts: list[bytes]) -> bytes:
    secmode = security_mode(c)
    caps = capabilities(c, dialect)
    now = wire.nt_time(time.time_ns())
    sec_off = 64 + 64
    hint = SPNEGO_INIT[c.kerberos is not None]
    ctx_off = wire.pad8(sec_off + len(hint)) if contexts else 0
    if dialect == wire.SMB202:
        transact = read = write = MAX_IO_SMB202
    else:
        transact, read, write = c.limits.max_trans, c.limits.max_read, c.limits.max_write
    body = struct.pack("<HHHH16sIIIIQQHHI", 65, secmode, dialect, len(contexts), c.server_guid,
                       caps, transact, read, write, now, 0, sec_off, len(hint), ctx_off)
    body += hint
    if contexts:
        body += b"\0" * (ctx_off - 64 - len(body))
        for i, c in enumerate(contexts):
            body += c
            if i < len(contexts) - 1:
                body += b"\0" * (wire.pad8(len(c)) - len(c))
    return body
