"""The durable-handle create contexts of CREATE (MS-SMB2 2.2.13.2.3-.12, 3.3.5.9.6, 3.3.5.9.7,
3.3.5.9.10, 3.3.5.9.12, 3.3.5.9.13), in the order and with the statuses smbd answers:

- DHnQ (v1) and DH2Q (v2, SMB 3.x) ask for a durable open: granted where the open got HANDLE
  caching (a batch oplock, or a lease with H), on a file (not a directory nor a stream) of a
  share with `durable handles = yes`, for a session of a user (not a guest: a guest cannot be
  told from another guest when reclaiming). A v2 timeout is the one asked for, at most 300 s
  (60 s for 0); v1's is 16 minutes. Persistent handles are never granted.
- DHnC and DH2C reclaim a detached durable open (`smb.durable`): the request's other fields
  are ignored; only the same user, through a tree of the same share, and for DH2C with the
  CreateGuid the open was made with, gets it back; every other attempt is
  STATUS_OBJECT_NAME_NOT_FOUND. The file's permissions are asked again, as the user, for the
  data rights the open holds (`still_granted`: Samba reopens the file as the user): rights
  taken from the user meanwhile are STATUS_ACCESS_DENIED, the open left waiting. A resilient open (`ioctl_resilient`) is reclaimed so by a
  DHnC only (a DH2C: STATUS_OBJECT_NAME_NOT_FOUND). A leased open (MS-SMB2 3.3.5.9.7, 3.3.5.9.12) is reclaimed
  only by its client (ClientGuid), with a lease context naming its LeaseKey (the state asked
  for is ignored: the lease keeps its own), and under the file's name (another name:
  STATUS_INVALID_PARAMETER); an open without a lease is not reclaimed with a lease context.
  The answer carries the lease as it is.
- DH2Q's CreateGuid names the CREATE for replays (SMB2_FLAGS_REPLAY_OPERATION): see
  `smb.durable`. A replay is answered the open the CREATE made, with the oplock level it asks
  for, DH2Q's answer where the open is durable and it asks for a batch oplock or a lease, and
  the open's lease as it is now where it sends a lease context; a replay with a lease context
  of an open without that lease (none, or another key) is refused STATUS_ACCESS_DENIED.
- SMB2_CREATE_APP_INSTANCE_ID with DH2Q: an open of the same user with the same AppInstanceId
  (an application's earlier instance, on another client perhaps) is closed first.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

from smbring.smb import acl, leasing, wire
from smbring.smb.contexts import parse_create_contexts
from smbring.smb.durable import V1_TIMEOUT, Durable, Pending, v2_timeout
from smbring.smb.errors import SMBError, in_request
from smbring.smb.fs import MAY_READ, MAY_WRITE, split_path, split_stream
from smbring.smb.oplocks import HANDLE, LEVEL_BATCH, LEVEL_LEASE, stat_only
from smbring.smb.state import GoAsync, Open

if TYPE_CHECKING:
    from smbring.smb.connection import Connection
    from smbring.smb.wire import Header

DHNQ, DHNC, DH2Q, DH2C = b"DHnQ", b"DHnC", b"DH2Q", b"DH2C"
RQLS = b"RqLs"
APP_INSTANCE_ID = bytes.fromhex("45BCA66AEFA7F74A9008FA462E144D74")


@dataclass
class DurableRequest:
    """What a CREATE asked of durability (none: version 0)."""

    version: int = 0            # 1: DHnQ, 2: DH2Q
    timeout: float = 0.0        # seconds, as granted
    create_guid: bytes = b""
    app_instance: bytes = b""
    key: tuple | None = None    # its name in the replay cache (DH2Q)
    pending: Pending | None = None  # the replay cache's entry while it runs (a first attempt)

    def failed(self, c: "Connection") -> None:
        """The CREATE failed: its CreateGuid is free again."""
        entry = c.state.durable.created(self.key) if self.key is not None else None
        if isinstance(entry, Pending):
            c.state.durable.release(self.key, entry)


_new_request = object.__new__


def session_user(c: "Connection", hdr: "Header") -> str:
    """Who may reclaim what this session opens: its account as the server resolved it at
    logon (`session.resolved_owner`: not the name as typed, so "alice", "ALICE" and
    "DOMAIN\\alice" are one owner); empty for a guest: nobody."""
    s = c.sessions.get(hdr.session_id)
    return "" if s is None or s.guest else s.owner


def before_create(c: "Connection", hdr: "Header", msg, tree, requested_oplock: int,
                  retry: bool):
    """The durable contexts of a CREATE, checked before anything is opened: a reconnect
    (DHnC, DH2C) or a replay is answered here ((body, FileId)); otherwise (None, the
    request) and the CREATE goes on."""
    ctx_off, ctx_len = struct.unpack_from("<II", msg, 64 + 48)
    if not ctx_len:         # no contexts at all (most CREATEs): nothing durable asked
        # (DurableRequest() without its __init__'s call: every field its default)
        return None, _new_request(DurableRequest)
    in_request(msg, ctx_off, ctx_len)
    contexts = parse_create_contexts(msg, ctx_off, ctx_len)
    if c.dialect < wire.SMB300:        # version 2 contexts are SMB 3's
        contexts.pop(DH2Q, None)
        contexts.pop(DH2C, None)
    dhnq, dhnc, dh2q, dh2c = (contexts.get(n) for n in (DHNQ, DHNC, DH2Q, DH2C))
    if (dhnc is not None and (dh2c is not None or dh2q is not None)) or \
            (dh2c is not None and (dhnq is not None or dh2q is not None)):
        raise SMBError(wire.STATUS_INVALID_PARAMETER)       # not both kinds at once
    if tree.fs is None:                # IPC$: no durable pipes
        if dhnc is not None or dh2c is not None:
            raise SMBError(wire.STATUS_OBJECT_NAME_NOT_FOUND)
        return None, DurableRequest()
    # a lease context counts where the server announced leasing (as smbd reads it)
    lease_ctx = contexts.get(RQLS) if c.policy.smb2_leases and c.dialect >= wire.SMB210 else None
    leased = 1 if lease_ctx is not None else 0
    if dhnc is not None:
        if len(dhnc) != 16:
            raise SMBError(wire.STATUS_INVALID_PARAMETER)
        if len(contexts) != 1 + (dhnq is not None) + leased:    # (a DHnQ with it is ignored)
            raise SMBError(wire.STATUS_OBJECT_NAME_NOT_FOUND)
        return reconnect(c, hdr, msg, tree, dhnc[:8], None, lease_key(c, lease_ctx), retry), DurableRequest()
    if dh2c is not None:
        if len(dh2c) != 36:
            raise SMBError(wire.STATUS_INVALID_PARAMETER)
        if len(contexts) != 1 + leased:
            raise SMBError(wire.STATUS_OBJECT_NAME_NOT_FOUND)
        return reconnect(c, hdr, msg, tree, dh2c[:8], dh2c[16:32], lease_key(c, lease_ctx), retry), \
            DurableRequest()
    request = DurableRequest(app_instance=contexts.get(APP_INSTANCE_ID, b"")[4:20])
    if dhnq is not None:
        if len(dhnq) != 16 or dh2q is not None:
            raise SMBError(wire.STATUS_INVALID_PARAMETER)
        request.version, request.timeout = 1, V1_TIMEOUT
    if dh2q is not None:
        if len(dh2q) != 32:
            raise SMBError(wire.STATUS_INVALID_PARAMETER)
        asked_ms, _flags, _reserved, create_guid = struct.unpack_from("<II8s16s", dh2q)
        request.version, request.timeout = 2, v2_timeout(asked_ms)    # (persistent: never)
        request.create_guid = create_guid
        request.key = (c.client_guid, session_user(c, hdr), create_guid)
        answered = replay(c, hdr, request, requested_oplock, retry, lease_ctx)
        if answered is not None:
            return answered, request
    if request.app_instance and request.version == 2 and any(request.app_instance):
        close_app_instance(c, hdr, request.app_instance)
        owner = session_user(c, hdr)
        if not retry and owner and c.state.peers is not None:
            # the other workers close theirs too, before this CREATE goes on (once answered)
            raise held_for_app_instance(c, msg, request, owner)
    return None, request


def lease_key(c: "Connection", lease_ctx: bytes | None) -> bytes | None:
    """The LeaseKey of a CREATE's lease context (None: none, or the all-zero key, which names
    no lease); a context of a wrong size is STATUS_INVALID_PARAMETER."""
    if lease_ctx is None:
        return None
    key = leasing.parse_request(lease_ctx, c.dialect).key
    return key if any(key) else None


def replay(c: "Connection", hdr: "Header", request: DurableRequest, requested_oplock: int,
           retry: bool, lease_ctx: bytes | None):
    """A CreateGuid the client used before (MS-SMB2 3.3.5.9.10): a replay of that CREATE gets
    its open ((body, FileId)); a new CREATE naming it is refused; otherwise it is taken for
    this CREATE while it runs (None)."""
    table = c.state.durable
    if retry:       # the held CREATE again: the name is its own already
        return None
    entry = table.created(request.key)
    if isinstance(entry, Pending):
        raise SMBError(wire.STATUS_FILE_NOT_AVAILABLE)      # the first is still held
    if entry is not None:
        o, action = entry
        if not hdr.flags & wire.FLAGS_REPLAY:
            raise SMBError(wire.STATUS_DUPLICATE_OBJECTID)
        if c.opens.get(o.fid) is o and o.session_id == hdr.session_id and o.tree_id == hdr.tree_id:
            return replayed(c, o, action, requested_oplock, lease_ctx)
        # a replay of an open this session no longer reaches: made anew
    request.pending = Pending(c.client)
    table.reserve(request.key, request.pending)
    return None


def replayed(c: "Connection", o: Open, action: int, requested_oplock: int, lease_ctx: bytes | None):
    """The answer to a replayed CREATE: the open it made, with the oplock level asked for, the
    DH2Q answer where the open is durable and durability could be granted for the ask, and
    the open's lease as it is now where the replay names it (as smbd answers)."""
    from smbring.smb.commands.create import response_body    # (create imports this module)
    lease = c.state.oplocks.lease_of(o)
    if lease_ctx is not None:
        key = leasing.parse_request(lease_ctx, c.dialect).key
        if lease is None or key != lease.key:
            raise SMBError(wire.STATUS_ACCESS_DENIED)       # not the lease the open holds
    answers = []
    d = c.state.durable.of(o)
    if d is not None and not d.resilient and requested_oplock in (LEVEL_BATCH, LEVEL_LEASE):
        answers.append((DH2Q, struct.pack("<II", int(d.timeout * 1000), 0)))
    if lease_ctx is not None:
        answers.append((leasing.CONTEXT_NAME, leasing.response(lease)))
    return response_body(o, requested_oplock, action, answers), o.fid


def close_app_instance(c: "Connection", hdr: "Header", app_instance: bytes) -> None:
    """MS-SMB2 3.3.5.9.13: the user's other open with this AppInstanceId is closed (a
    failed-over application's earlier instance), wherever it is."""
    user = session_user(c, hdr)
    if not user:
        return
    for d in list(c.state.durable.with_app_instance(app_instance)):
        if d.user != user:
            continue
        if d.detached:
            c.state.durable.close_detached(d, c.outbox)
            continue
        owner = owner_of(c, d.open)
        if owner is not None:
            owner.close_open(d.open)


def close_app_instance_here(state, app_instance: bytes, owner: str, effects: list) -> int:
    """Another worker's CREATE naming the AppInstanceId for `owner` (a resolved owner, never
    empty): this worker's opens of that user with it are closed, as `close_app_instance`
    closes them in one process (a detached one as its timeout would, an attached one as a
    CLOSE would, its client told nothing). How many."""
    closed = 0
    if not owner:
        return closed
    for d in list(state.durable.with_app_instance(app_instance)):
        if d.user != owner:
            continue
        if d.detached:
            state.durable.close_detached(d, effects)
            closed += 1
            continue
        s = state.sessions.get(d.open.session_id)
        client = getattr(s, "client", None)
        if client is not None and client.connections and client.opens.get(d.open.fid) is d.open:
            holder = client.connections[0]
            holder.close_open(d.open)
            if holder.on_output is not None and holder.outbox:
                holder.on_output()
            closed += 1
    return closed


def held_for_app_instance(c: "Connection", msg, request: DurableRequest, owner: str) -> GoAsync:
    """A CREATE naming an AppInstanceId with several workers: answered STATUS_PENDING first,
    it goes on (as a retry) once every other worker has closed `owner`'s opens of that
    instance (`close_app_instance_here` there) or given no answer within the peers' bound.
    Its CreateGuid stays reserved meanwhile (as for a CREATE held for a break)."""
    from smbring.smb.commands.create import held_create    # (create imports this module)
    pending = request.pending

    def wait(areq, again) -> None:
        waiting = [True]

        def answered(_closed=None) -> None:
            if waiting[0]:
                waiting[0] = False
                again()

        def stop() -> None:
            waiting[0] = False
            if request.key is not None:
                request.failed(c)       # cancelled, or its connection lost for good

        areq.on_cancel = stop
        if pending is not None:
            pending.request = areq
            areq.replayable = True
        c.state.peers.close_app_instance(request.app_instance, owner, answered)

    return held_create(c, msg, wait)


def owner_of(c: "Connection", o: Open) -> "Connection | None":
    """The connection whose client's tables hold an attached open."""
    if c.opens.get(o.fid) is o:
        return c
    s = c.state.sessions.get(o.session_id)
    client = getattr(s, "client", None)
    if client is not None and client.connections and client.opens.get(o.fid) is o:
        return client.connections[0]
    return None


def close_detached(c: "Connection", key, access: int) -> bool:
    """A new open of the file `key` that would break a detached durable open's oplock (any
    open that reads, writes or deletes: a detached open always holds HANDLE caching), or be
    refused by its share mode, closes it first: nobody could answer the break (Windows and
    Samba do the same). True when one was closed (the file may be gone: delete on close)."""
    if stat_only(access):
        return False
    detached = c.state.durable.detached_of(key)
    for d in detached:
        c.state.durable.close_detached(d, c.outbox)
    return bool(detached)


def granted(c: "Connection", hdr: "Header", o: Open, request: DurableRequest, action: int) -> list:
    """After the open is made: its CreateGuid names it; durability is granted where the rules
    allow (the create contexts to answer with)."""
    table = c.state.durable
    if request.key is not None:
        table.remember(request.key, o, action)
    if not request.version:
        return []
    share = o.tree.share
    user = session_user(c, hdr)
    if not (share.durable_handles and user and not o.is_dir and o.stream is None and
            c.state.oplocks.caching(o) & HANDLE):
        return []
    table.grant(Durable(open=o, persistent=o.fid[:8], user=user, client_guid=c.client_guid,
                        create_guid=request.create_guid if request.version == 2 else b"",
                        timeout=request.timeout, share=(share.name.lower(), share.path),
                        app_instance=request.app_instance if request.version == 2 else b""))
    if request.version == 1:
        return [(DHNQ, b"\0" * 8)]
    return [(DH2Q, struct.pack("<II", int(request.timeout * 1000), 0))]


def reconnect(c: "Connection", hdr: "Header", msg, tree, persistent: bytes, create_guid: bytes | None,
              asked_lease: bytes | None, retry: bool = False):
    """DHnC / DH2C: the detached open, attached to this session and tree again; `asked_lease`:
    the LeaseKey of the request's lease context, if any. An open still attached to another
    session of its user (the client reconnected before its old connection's end was read)
    is waited for, at most DETACH_WAIT seconds, then asked for again (`retry`)."""
    from smbring.smb.commands.create import response_body    # (create imports this module)
    table = c.state.durable
    user = session_user(c, hdr)
    d = table.reclaim(persistent, user, create_guid)
    if d is None and not retry and table.held_elsewhere(persistent, user, create_guid, hdr.session_id):
        raise held_for_detach(c, msg, persistent)
    if d is None and not retry and user and c.state.peers is not None and \
            table.of_persistent(persistent) is None:
        # another worker's perhaps (a reconnect under another ClientGuid reached this one):
        # it is asked to hand the open over, then this reconnect is tried again, as here
        raise held_for_peers(c, msg, tree, persistent, create_guid, user)
    if d is None or d.share != (tree.share.name.lower(), tree.share.path):
        raise SMBError(wire.STATUS_OBJECT_NAME_NOT_FOUND)
    o = d.open
    lease = c.state.oplocks.lease_of(o)
    if lease is not None:
        if d.client_guid != c.client_guid or asked_lease != lease.key:
            raise SMBError(wire.STATUS_OBJECT_NAME_NOT_FOUND)   # a lease is its client's
        if not o.delete_on_close and not names_the_open(msg, o):
            raise SMBError(wire.STATUS_INVALID_PARAMETER)
    elif asked_lease is not None:
        raise SMBError(wire.STATUS_OBJECT_NAME_NOT_FOUND)       # it has no lease to name
    oplock = LEVEL_LEASE if lease is not None else c.state.oplocks.level(o)
    if not still_granted(tree, o):
        raise SMBError(wire.STATUS_ACCESS_DENIED)           # the file is no longer the user's to open so
    if tree.share.read_only and o.delete_on_close:
        raise SMBError(wire.STATUS_ACCESS_DENIED)           # the share is read-only now
    table.reattach(d)
    if tree.share.read_only:         # what the share allows now, as a new open would get
        o.granted &= wire.READ_ONLY_ACCESS
    o.tree, o.session_id, o.tree_id = tree, hdr.session_id, hdr.tree_id
    c.count_locks(o, d.locks)
    o.fid = d.persistent + struct.pack("<Q", c.next_id)
    c.next_id += 1
    c.add_open(o)
    c.state.oplocks.rebind(o, c.send_oplock_break, c.send_lease_break)
    answers = [(leasing.CONTEXT_NAME, leasing.response(lease))] if lease is not None else []
    return response_body(o, oplock, wire.FILE_OPENED, answers), o.fid


def held_for_peers(c: "Connection", msg, tree, persistent: bytes, create_guid: bytes | None,
                   user: str) -> GoAsync:
    """A reconnect naming an open this worker does not hold: answered STATUS_PENDING first,
    the other workers are asked for it (`peers.reclaim`: the one holding it detached, for
    this user, CreateGuid and share, hands it over, and it waits detached here); then the
    reconnect is handled again, once, with every check of a reconnect here."""
    from smbring.smb.commands.create import held_create    # (create imports this module)

    def wait(areq, again) -> None:
        waiting = [True]

        def answered(_moved=None) -> None:
            if waiting[0]:
                waiting[0] = False
                again()

        def stop() -> None:
            waiting[0] = False

        areq.on_cancel = stop
        c.state.peers.reclaim(c, tree, bytes(persistent), None if create_guid is None else bytes(create_guid),
                              user, answered)

    return held_create(c, msg, wait)


# seconds a reconnect waits for the open's old connection to be taken down (a client
# reconnects once it has lost its connection; the server may read that end a little later)
DETACH_WAIT = 2.0


def held_for_detach(c: "Connection", msg, persistent: bytes) -> GoAsync:
    """A reconnect that waits (answered STATUS_PENDING first) until the open it names is
    detached or closed, or DETACH_WAIT has passed; then it is handled again, once."""
    from smbring.smb.commands.create import held_create    # (create imports this module)

    def wait(areq, again) -> None:
        areq.on_cancel = c.state.durable.wait_detached(persistent, again, DETACH_WAIT)

    return held_create(c, msg, wait)


DATA_RIGHTS = wire.FILE_READ_DATA | wire.FILE_WRITE_DATA | wire.FILE_APPEND_DATA | wire.FILE_EXECUTE


def still_granted(tree, o: Open) -> bool:
    """Whether the reconnecting user may still open the file for the data rights the open
    holds: Samba opens a reclaimed file anew as the user (vfs_default_durable_reconnect's
    fd_open), so the kernel judges the file's mode, owner and ACLs as they are now; smbring
    keeps the descriptor, so it asks the kernel the same of the very file (faccessat, as the
    tree's account), and a stored descriptor too, as a new open would. A file whose
    permissions were taken from the user while its open waited detached (chmod, chown, an
    ACL, a group left) is not handed back with them: STATUS_ACCESS_DENIED, and the detached
    open waits on (as in Samba) until its timeout or another open closes it.
    Except where the owner's write bits are gone for the READONLY attribute a client set
    (stored in the file's DOS information): smbring clears them for it, where Samba keeps the
    attribute in its DOS information alone and leaves the mode as it is; the owner's write
    open is handed back then, as Windows keeps a handle's access when READONLY is set after
    it opened (smbtorture's durable-open.read-only reconnects the handle that made its file
    READONLY). A chmod of the administrator's stores no such attribute."""
    from smbring.smb.commands.create import sd_of     # (create imports this module)
    fs, rights = tree.fs, o.granted
    mode = ((MAY_READ if rights & (wire.FILE_READ_DATA | wire.FILE_EXECUTE) else 0)
            | (MAY_WRITE if rights & (wire.FILE_WRITE_DATA | wire.FILE_APPEND_DATA) else 0))
    try:
        owner = acl.unix_user(fs.fstat(o.fd).st_uid)
        if mode and not fs.may_access_open(o.fd, mode):
            if not (mode & MAY_WRITE and acl.owns(tree.token, owner) and read_only_attribute(fs, o.fd)) \
                    or mode & MAY_READ and not fs.may_access_open(o.fd, MAY_READ):
                return False
        sd = sd_of(fs, o.fd, o.parts)
        if sd is not None:
            return acl.check(rights & DATA_RIGHTS, sd, None, tree.token, owner) >= 0
    except OSError:
        return False
    return True


def read_only_attribute(fs, fd: int) -> bool:
    """Whether the file's stored DOS information holds the READONLY attribute."""
    dos = fs.get_dos(fd)
    return dos is not None and bool(dos.attrs & wire.ATTR_READONLY)


def names_the_open(msg, o: Open) -> bool:
    """Whether a CREATE's name is the open's file (its path now, case-insensitively)."""
    name_off, name_len = struct.unpack_from("<HH", msg, 64 + 44)
    name = wire.from_utf16(in_request(msg, name_off, name_len)) if name_len else ""
    base, stream = split_stream(name)
    parts = o.base_parts if o.base_parts is not None else o.parts
    return [p.casefold() for p in split_path(base)] == [p.casefold() for p in parts] and \
        (stream or "").casefold() == (o.stream or "").casefold()
