"""The wire side of leases (MS-SMB2 2.2.13.2.8, 2.2.13.2.10, 2.2.14.2.10, 2.2.14.2.11,
2.2.23.2, 2.2.24.2, 2.2.25.2): the lease a CREATE asks for, the one it is answered, the
LEASE_BREAK notification and the acknowledgement's answer. What a lease is granted and
when it breaks is `oplocks`' business."""
from __future__ import annotations

import struct
from dataclasses import dataclass

from smbring.smb import wire
from smbring.smb.errors import SMBError
from smbring.smb.oplocks import LEVEL_LEASE, Lease

CONTEXT_NAME = b"RqLs"
V1_SIZE, V2_SIZE = 32, 52
FLAG_BREAK_IN_PROGRESS, FLAG_PARENT_LEASE_KEY_SET = 0x02, 0x04
NOTIFY_FLAG_ACK_REQUIRED = 0x01
BREAK_SIZE, ACK_SIZE = 44, wire.LEASE_BREAK_ACK_SIZE


@dataclass
class LeaseRequest:
    key: bytes
    state: int
    version: int = 1
    parent_key: bytes | None = None
    epoch: int = 0


def parse_request(data: bytes, dialect: int) -> LeaseRequest:
    """SMB2_CREATE_REQUEST_LEASE (32 bytes) or _V2 (52, SMB 3 and later; a version 2 request
    on SMB 2.1 is read as version 1, as Samba does). Any other size: STATUS_INVALID_PARAMETER."""
    if len(data) not in (V1_SIZE, V2_SIZE):
        raise SMBError(wire.STATUS_INVALID_PARAMETER)
    key, state, flags = struct.unpack_from("<16sII", data)
    if len(data) == V1_SIZE or dialect < wire.SMB300:
        return LeaseRequest(key, state)
    parent, epoch = struct.unpack_from("<16sH", data, 32)
    return LeaseRequest(key, state, 2, parent if flags & FLAG_PARENT_LEASE_KEY_SET else None, epoch)


def response(lease: Lease) -> bytes:
    """The lease a CREATE is answered (in the version the lease was made with)."""
    flags = FLAG_BREAK_IN_PROGRESS if lease.breaking else 0
    if lease.version == 1:
        return struct.pack("<16sIIQ", lease.key, lease.state, flags, 0)
    if lease.parent_key is not None:
        flags |= FLAG_PARENT_LEASE_KEY_SET
    return struct.pack("<16sIIQ16sHH", lease.key, lease.state, flags, 0,
                       lease.parent_key or bytes(16), lease.epoch, 0)


def break_notification(lease: Lease, old: int, new: int, ack_required: bool) -> bytes:
    """The LEASE_BREAK notification's body (NewEpoch zero for a version 1 lease)."""
    return struct.pack("<HHI16sIIIII", BREAK_SIZE, lease.epoch if lease.version == 2 else 0,
                       NOTIFY_FLAG_ACK_REQUIRED if ack_required else 0, lease.key, old, new, 0, 0, 0)


def ack_response(key: bytes, state: int) -> bytes:
    return struct.pack("<HHI16sIQ", ACK_SIZE, 0, 0, key, state, 0)


def requested(contexts: dict[bytes, bytes], oplock_level: int, dialect: int,
              enabled: bool) -> LeaseRequest | None:
    """The lease a CREATE asks for: its lease context counts where it asks for the oplock
    level LEASE, on SMB 2.1 and later, with leases on (`smb2 leases`); else it is ignored."""
    if oplock_level != LEVEL_LEASE or not enabled or dialect < wire.SMB210 \
            or CONTEXT_NAME not in contexts:
        return None
    return parse_request(contexts[CONTEXT_NAME], dialect)
