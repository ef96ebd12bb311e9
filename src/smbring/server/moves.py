"""A detached durable open handed to another worker (``smbring serve --workers N``).

A client that reconnects under a new ClientGuid may reach another worker than the one its
durable open waits in (detached: its connection lost). One process gives the open back to any
reconnect of the same user (DHnC; DH2C with the same CreateGuid; a leased open to its own
ClientGuid only), so the workers do too: the reconnect's worker asks the others for the open
(`Peers.reclaim`, over the hand-off sockets, server.handoff), and the one holding it hands it
over: its descriptor (SCM_RIGHTS) with what the open is (its name, access, position, the
durable open's user, CreateGuid, timeout left, ...). The store's records of it (its share
mode, byte-range locks, oplock or lease holder, path, a delete on close it set) are renamed
to the taker's open in one write transaction; the reconnect then runs again in the taker,
where the open now waits detached, with every check it makes in one process (user, share,
CreateGuid, lease key, the file's permissions now). A check that fails leaves the open
detached there, as in one process.

Exactly once: the giver marks its record offered (GIVING, in the store) before it answers;
the taker's transaction renames the records only where that mark is still there; the giver,
once the taker has answered or ended or ANSWER bound passed, withdraws the offer in one
transaction: where its record is still there it keeps the open (a late taker finds no offer
and gives its copy of the descriptor up), where it is gone the taker has it, and the giver
forgets it (closing only its own copy of the descriptor). While an offer is out nothing in
the giver reclaims, expires or closes the open. Two workers asking at once: the first is
offered the open, the second finds it offered (or gone) and is told no.

The giver checks what the request names before it offers anything: a detached open of that
persistent FileId, of that user (the resolved owner), CreateGuid and share, not leased to
another ClientGuid; so another user's reconnect moves nothing.
"""
from __future__ import annotations

import json
import logging
import os
import stat

from smbring.server.shared_store import OWNER, WORKER
from smbring.smb.durable import Durable
from smbring.smb.fileinfo import show_on_close
from smbring.smb.state import Open

log = logging.getLogger("smbring.server")

MAX_DESCRIPTION = 60 * 1024


class Refused(Exception):
    """A take-over undone: the store's records were not as offered."""


def request_body(persistent: bytes, create_guid: bytes | None, client_guid: bytes, share: tuple,
                 owner: str) -> bytes:
    return json.dumps({"persistent": persistent.hex(),
                       "create_guid": None if create_guid is None else create_guid.hex(),
                       "client_guid": client_guid.hex(), "share": list(share),
                       "owner": owner}).encode()


def _hex(value, size: int | None = None) -> bytes:
    if not isinstance(value, str):
        raise ValueError("not hex")
    data = bytes.fromhex(value)
    if size is not None and len(data) != size:
        raise ValueError("wrong size")
    return data


def _parse_request(body: bytes) -> dict | None:
    try:
        r = json.loads(body)
        share = r["share"]
        if not (isinstance(share, list) and len(share) == 2 and all(isinstance(x, str) for x in share)
                and isinstance(r["owner"], str) and r["owner"]):
            return None
        return {"persistent": _hex(r["persistent"], 8),
                "create_guid": None if r["create_guid"] is None else _hex(r["create_guid"], 16),
                "client_guid": _hex(r["client_guid"], 16), "share": tuple(share), "owner": r["owner"]}
    except (ValueError, KeyError, TypeError):
        return None


# -- the giver ----------------------------------------------------------------------------------
class Offer:
    """An open offered to another worker: `data` (its description) and `fd` go to it, then
    `settle` ends the offer (see the module's description)."""

    def __init__(self, server, d: Durable, data: bytes):
        self.server, self.d, self.data, self.fd = server, d, data, d.open.fd

    def settle(self) -> bool:
        """Whether the other worker took the open (then it is forgotten here)."""
        d, o, state = self.d, self.d.open, self.server.state
        try:
            kept = state.oplocks.withdraw(o)
        except Exception:
            log.exception("durable open offered to another worker: not settled (kept here)")
            kept = True
        if kept:
            d.moving = False
            return False
        try:        # the write time its writes owed the file: given now, as at a close
            show_on_close(state.write_times, o)
        except OSError:
            pass
        state.durable.let_go(d)
        state.open_paths.let_go(o)
        state.locks.let_go(o.key, id(o))
        tree, fd = o.tree, o.fd
        modules = self.server._io_modules()
        share = tree.share.name if tree.share is not None else None

        def close() -> None:
            if share in modules:
                modules[share].closed(fd)
            try:
                tree.fs.close_file(fd)
            except OSError:
                pass
        self.server.holds.close(fd, close)
        log.info("a detached durable handle handed to another worker (its client reconnected there)")
        return True


def offer(server, body: bytes) -> Offer | None:
    """Another worker's reconnect asks for a detached open: offered where it is one that
    reconnect may have (see the module's description), else None."""
    r = _parse_request(body)
    if r is None:
        return None
    state = server.state
    d = state.durable.reclaim(r["persistent"], r["owner"], r["create_guid"])
    if d is None or d.share != r["share"] or not isinstance(d.open, Open) or d.open.tree is None:
        return None
    o = d.open
    oplocks = state.oplocks
    if d.client_guid != r["client_guid"] and oplocks.has_lease_record(o):
        return None             # a lease is its client's: no reconnect of another would get it
    if not oplocks.offer(o):
        return None
    d.moving = True
    try:
        data = _describe(server, d)
    except Exception:
        log.exception("durable open not described for another worker")
        data = None
    if data is None or len(data) > MAX_DESCRIPTION:
        oplocks.withdraw(o)
        d.moving = False
        return None
    return Offer(server, d, data)


def held(server, body: bytes) -> bytes | None:
    """The persistent FileId of the open a request names where `offer` would give it but it
    is still attached: its client reconnected (to another worker) before this worker read the
    end of its old connection. The giver then waits for that end, as one process does
    (`DurableOpens.held_elsewhere`); None where the request names no such open."""
    r = _parse_request(body)
    if r is None:
        return None
    # (no session of this worker is the asking reconnect's: 0 is no session's id)
    if not server.state.durable.held_elsewhere(r["persistent"], r["owner"], r["create_guid"], 0):
        return None
    return r["persistent"]


def _describe(server, d: Durable) -> bytes | None:
    o, state = d.open, server.state
    entry = state.open_paths.entry_of(o)
    if entry is None:
        return None
    return json.dumps({
        "giver": [server.store.worker, id(o) & 0xFFFFFFFFFFFFFFFF],
        "parts": list(o.parts), "access": o.access, "granted": o.granted,
        "delete_on_close": bool(o.delete_on_close), "key": list(o.key), "position": o.position,
        "fid": o.fid.hex(), "mode": o.mode, "index_number": o.index_number,
        "resume_key": o.resume_key.hex(), "kept_write_ns": o.kept_write_ns,
        "channel_sequence": o.channel_sequence,
        "lock_sequences": None if o.lock_sequences is None else bytes(o.lock_sequences).hex(),
        "lock_owner": o.lock_owner, "path_entry": entry.hex(),
        "stat_only": False,
        "durable": {"persistent": d.persistent.hex(), "user": d.user, "client_guid": d.client_guid.hex(),
                    "create_guid": d.create_guid.hex(), "timeout": d.timeout, "share": list(d.share),
                    "left": state.durable.seconds_left(d), "locks": d.locks,
                    "app_instance": d.app_instance.hex(), "resilient": bool(d.resilient)},
    }).encode()


# -- the taker ----------------------------------------------------------------------------------
def adopt(server, conn, tree, data: bytes, fd: int) -> bool:
    """Takes over the open another worker offered (`data`, its descriptor `fd`): it waits
    detached here from now on, its close `conn`'s (the reconnecting connection, as the one
    that detached it would be in one process). False (and `fd` closed) where it cannot be."""
    try:
        return _adopt(server, conn, tree, data, fd)
    except Exception as e:
        if not isinstance(e, (Refused, ValueError, KeyError, TypeError, OSError)):
            log.exception("durable open from another worker not taken over")
        else:
            log.info("durable open from another worker not taken over: %s", e)
        os.close(fd)
        return False


def _adopt(server, conn, tree, data: bytes, fd: int) -> bool:
    desc = json.loads(data)
    dd = desc["durable"]
    key = tuple(int(x) for x in desc["key"])
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != key or len(key) != 2:
        raise Refused("the descriptor is not the open's file")
    share = (tree.share.name.lower(), tree.share.path)
    if tuple(dd["share"]) != share:
        raise Refused("another share")
    worker, open_id = (int(x) for x in desc["giver"])
    giver = OWNER.pack(worker, open_id)
    if worker == server.store.worker:
        raise Refused("its own")
    parts = desc["parts"]
    if not isinstance(parts, list) or not all(isinstance(p, str) for p in parts):
        raise Refused("malformed name")
    o = Open(fd=fd, parts=list(parts), is_dir=False, access=int(desc["access"]),
             delete_on_close=bool(desc["delete_on_close"]), key=key, position=int(desc["position"]),
             fid=_hex(desc["fid"], 16), tree=tree, granted=int(desc["granted"]), mode=int(desc["mode"]),
             index_number=int(desc["index_number"]), resume_key=_hex(desc["resume_key"]),
             kept_write_ns=None if desc["kept_write_ns"] is None else int(desc["kept_write_ns"]),
             channel_sequence=int(desc["channel_sequence"]),
             lock_sequences=None if desc["lock_sequences"] is None else bytearray(_hex(desc["lock_sequences"])),
             lock_owner=desc["lock_owner"] if isinstance(desc["lock_owner"], str) else None)
    d = Durable(open=o, persistent=_hex(dd["persistent"], 8), user=str(dd["user"]),
                client_guid=_hex(dd["client_guid"], 16), create_guid=_hex(dd["create_guid"]),
                timeout=float(dd["timeout"]), share=share, app_instance=_hex(dd["app_instance"]),
                resilient=bool(dd["resilient"]))
    if d.persistent != o.fid[:8] or not d.user or server.state.durable.of_persistent(d.persistent) is not None:
        raise Refused("not the open named")
    entry = _hex(desc["path_entry"])
    if entry[-OWNER.size:] != giver:
        raise Refused("a path entry of another open")
    state = server.state
    with server.store.write(grows=True) as txn:       # every record, or none
        if not state.oplocks.take_over(txn, key, giver, o):
            raise Refused("no longer offered")
        if not state.share_modes.take_over(txn, key, giver, id(o)):
            raise Refused("no share mode")
        if not state.open_paths.take_over(txn, entry, o):
            raise Refused("no path")
        state.pending_deletes.take_over(txn, key, giver, id(o))
        locks = state.locks.take_over(txn, key, giver, id(o))
    state.open_paths.taken_over(o)
    state.locks.taken_over(key, id(o), locks)
    state.oplocks.taken_over(o, bool(desc["stat_only"]))
    adopt_descriptor = getattr(tree.fs, "adopt_descriptor", None)
    if adopt_descriptor is not None:
        adopt_descriptor(fd, st.st_dev)
    state.durable.adopt(d, lambda effects: conn.release_file(o, effects),
                        sum(n for *_range, n in locks), float(dd["left"]))
    log.info("a detached durable handle taken over from worker %d (its client reconnected here)",
             WORKER.unpack(giver[:WORKER.size])[0])
    return True
