"""Durable handles and the CREATE replay cache, shared by every connection of the server
(MS-SMB2 3.3.5.9.6, 3.3.5.9.7, 3.3.5.9.10, 3.3.5.9.12, 3.3.7.1): one `DurableOpens` per
server, held by its `ServerState`.

A durable open survives the loss of its session (the connection dropped, a LOGOFF, a
PreviousSessionId that replaced the session): it is then *detached*, owned by nobody but this
table, its file, share mode, byte-range locks and oplock kept, until

- the same user reclaims it on a new session (a CREATE with DHnC, or DH2C with the CreateGuid
  it was opened with): it is attached to that session and tree again, with its FileId's
  persistent half;
- another open of the file would have to break its oplock or is refused by its share mode:
  it is closed then (nobody could answer a break), as Windows and Samba do (with several
  workers, a CREATE in another worker asks this one to close it: server.shared_oplocks);
- its timeout passes (`expire`, called by the server's sweep): it is closed;
- more than `max disconnected durable handles` are detached: the oldest of the user whose open
  was detached last is closed (never another user's).

A resilient open (FSCTL_LMR_REQUEST_RESILIENCY, MS-SMB2 3.3.5.15.9) is one of these too, marked
`resilient`: it is detached whatever oplock it holds, for the timeout it asked for, and only a
DHnC reclaims it (it is no durable open for a DH2C, MS-SMB2 3.3.5.9.12).

Closing a detached open is a CLOSE (delete on close is honoured): the connection that detached
it left a function for it, handed the effects list the close may add to (a file to forget).

The replay cache (MS-SMB2 3.3.5.9.10): a CREATE with DH2Q names itself by its CreateGuid; the
same client (ClientGuid) and user asking again with SMB2_FLAGS_REPLAY_OPERATION gets the open
that CREATE made instead of a new one; asking again without the flag gets
STATUS_DUPLICATE_OBJECTID; asking while the first is still held (waiting for an oplock break)
gets STATUS_FILE_NOT_AVAILABLE (smbd's answer; Windows answers STATUS_ACCESS_DENIED). A held
CREATE outlives the loss of its channel where its session goes on through another one: it
completes when the break is answered, its answer going nowhere, and a replay through the
other channel then gets its open. An entry lives until a request uses the open (its client
has had the answer then) or the open closes.

Every structure here is bounded by the opens (and the detached ones by their limit).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

V1_TIMEOUT = 16 * 60.0          # seconds a DHnQ open waits detached (Windows', Samba's)
V2_DEFAULT_TIMEOUT = 60.0       # a DH2Q asking for 0 (MS-SMB2 3.3.5.9.10, Windows 2012, Samba)
V2_MAX_TIMEOUT = 300.0          # the most a DH2Q gets (Samba's cap)


def v2_timeout(asked_ms: int) -> float:
    """The timeout (seconds) a DH2Q asking for `asked_ms` milliseconds is granted."""
    if not asked_ms:
        return V2_DEFAULT_TIMEOUT
    return min(asked_ms / 1000.0, V2_MAX_TIMEOUT)


@dataclass(eq=False)
class Durable:
    """A durable open, attached or detached."""

    open: object
    persistent: bytes               # FileId.Persistent: what a reconnect names it by
    user: str                       # who may reclaim it: the session's resolved owner (Session.owner)
    client_guid: bytes
    create_guid: bytes              # DH2Q's; empty for DHnQ (a DH2C never finds it then)
    timeout: float                  # seconds it waits detached
    share: tuple                    # (share name lowercased, share path): a reconnect's tree must match
    deadline: float | None = None   # detached: when it is closed
    close: Callable | None = None   # detached: close(effects) closes the file as a CLOSE would
    locks: int = 0                  # detached: the byte-range locks it holds (counted again on reattach)
    app_instance: bytes = b""       # SMB2_CREATE_APP_INSTANCE_ID's (v2)
    resilient: bool = False         # made so by FSCTL_LMR_REQUEST_RESILIENCY (Open.IsResilient)
    # detached and being handed to another worker's reconnect (server.moves): nothing here
    # reclaims or closes it until the hand-over has ended, one way or the other
    moving: bool = False

    @property
    def detached(self) -> bool:
        return self.deadline is not None


class Pending:
    """A CREATE with DH2Q under way: its CreateGuid is taken, and a replay of it is refused,
    until it is answered. Once it is held (for an oplock break) `request` is its
    AsyncRequest, which may move to another channel of its client when its own connection
    is lost; it is live while one of the client's connections still holds it."""

    def __init__(self, client):
        self.client = client            # the channels.Client whose connections may hold it
        self.request = None

    def live(self) -> bool:
        return self.request is not None and self.client.connection_of(self.request) is not None


def _names(d: Durable, user: str, create_guid: bytes | None) -> bool:
    """Whether a reconnect by `user` naming `create_guid` (None: a DHnC, which does not check
    it) may have `d`, attached or not: its user's; a DH2C's CreateGuid must be the open's (a
    DHnQ open's is all zero) and never reclaims a resilient open."""
    if not user or d.user != user:
        return False
    return create_guid is None or not d.resilient and (d.create_guid or bytes(16)) == bytes(create_guid)


class DurableOpens:
    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self._by_persistent: dict[bytes, Durable] = {}
        self._by_open: dict[object, Durable] = {}
        self._detached: dict[Durable, None] = {}        # in the order they were detached
        # the same by file ((device, inode)): every CREATE asks for its file's, and up to
        # `max disconnected durable handles` may wait, so it is no scan of them all
        self._detached_by_key: dict[object, dict[Durable, None]] = {}
        # the same by user (`Durable.user`): past the bound, a user's own oldest are closed
        self._detached_by_user: dict[str, dict[Durable, None]] = {}
        # (ClientGuid, user, CreateGuid) -> (the open, its CreateAction) or Pending
        # (an open knows its own key: Open.create_key)
        self._creates: dict[tuple, object] = {}
        # persistent id -> {callback: deadline}: reconnects waiting for the open's old
        # connection to be taken down (`wait_detached`)
        self._awaited: dict[bytes, dict[Callable, float]] = {}

    # -- durable opens ---------------------------------------------------------------------
    def grant(self, d: Durable) -> None:
        self._by_persistent[d.persistent] = d
        self._by_open[d.open] = d

    def of(self, o) -> Durable | None:
        return self._by_open.get(o)

    def detach(self, o, close: Callable, locks: int, limit: int, effects: list) -> bool:
        """The open's session is gone: it waits detached (True), unless it is not durable
        (False: the caller closes it). Past `limit` detached opens, the oldest is closed."""
        d = self._by_open.get(o)
        if d is None or d.detached:
            return False
        d.deadline = self.clock() + d.timeout
        d.close, d.locks = close, locks
        self._detached[d] = None
        self._detached_by_key.setdefault(d.open.key, {})[d] = None
        self._detached_by_user.setdefault(d.user, {})[d] = None
        # past the bound, the oldest of this user's own (this one, at worst) are closed, never
        # another user's: leaving many opens behind takes nobody else's handles away
        while len(self._detached) > max(limit, 0):
            oldest = next((o for o in self._detached_by_user.get(d.user, ()) if not o.moving), None)
            if oldest is None:
                break
            self._close(oldest, effects)
        self._wake(d.persistent)
        return True

    def reclaim(self, persistent: bytes, user: str, create_guid: bytes | None) -> Durable | None:
        """The detached open a reconnect names, if `user` may have it: None for any other
        (unknown, attached, another user's, another CreateGuid: all look alike to the client).
        `create_guid` None: a DHnC, which does not check it; a DH2C's must be the open's (a
        DHnQ open's is all zero, as smbd keeps it: a DH2C naming no CreateGuid reclaims it),
        and a DH2C never reclaims a resilient open (not durable: MS-SMB2 3.3.5.9.12)."""
        d = self._by_persistent.get(bytes(persistent))
        return d if d is not None and d.detached and not d.moving and _names(d, user, create_guid) else None

    def of_persistent(self, persistent: bytes) -> Durable | None:
        """The durable open (attached or not) a reconnect's FileId names, whoever's."""
        return self._by_persistent.get(bytes(persistent))

    def held_elsewhere(self, persistent: bytes, user: str, create_guid: bytes | None,
                       session_id: int) -> bool:
        """Whether the open a reconnect names is one `reclaim` would give it, but still
        attached to another session: its client reconnected before the server saw the old
        connection end (its close not yet read). The reconnect then waits for it."""
        d = self._by_persistent.get(bytes(persistent))
        return d is not None and not d.detached and d.open.session_id != session_id and \
            _names(d, user, create_guid)

    def wait_detached(self, persistent: bytes, then: Callable[[], None], seconds: float) -> Callable[[], None]:
        """Calls `then` once the open is detached or closed, or once `seconds` have passed
        (`expire`), whichever comes first; returns what cancels the wait."""
        key = bytes(persistent)
        self._awaited.setdefault(key, {})[then] = self.clock() + seconds

        def cancel() -> None:
            waiting = self._awaited.get(key)
            if waiting is not None:
                waiting.pop(then, None)
                if not waiting:
                    del self._awaited[key]
        return cancel

    def _wake(self, persistent: bytes) -> None:
        for then in self._awaited.pop(persistent, {}):
            then()

    def _undetach(self, d: Durable) -> None:
        if d in self._detached:
            del self._detached[d]
            same_file = self._detached_by_key.get(d.open.key)
            if same_file is not None:
                same_file.pop(d, None)
                if not same_file:
                    del self._detached_by_key[d.open.key]
            same_user = self._detached_by_user.get(d.user)
            if same_user is not None:
                same_user.pop(d, None)
                if not same_user:
                    del self._detached_by_user[d.user]

    def reattach(self, d: Durable) -> None:
        self._undetach(d)
        d.deadline, d.close, d.locks = None, None, 0

    def forget(self, o) -> None:
        """The open is closed: it is no longer durable nor named by its CreateGuid."""
        d = self._by_open.pop(o, None)
        if d is not None:
            self._by_persistent.pop(d.persistent, None)
            self._wake(d.persistent)
            self._undetach(d)
        self.seen(o)

    def with_app_instance(self, app_instance: bytes) -> list[Durable]:
        return [d for d in self._by_open.values() if d.app_instance == app_instance]

    def detached_of(self, key) -> list[Durable]:
        """The detached opens of the file `key` ((device, inode))."""
        return list(self._detached_by_key.get(key, ()))

    def close_detached(self, d: Durable, effects: list) -> None:
        if d.detached and not d.moving:
            self._close(d, effects)

    def adopt(self, d: Durable, close: Callable, locks: int, seconds_left: float) -> None:
        """A detached open another worker handed over (server.moves): it waits here as if
        detached here, for `seconds_left` more (its timeout kept)."""
        self.grant(d)
        d.deadline, d.close, d.locks, d.moving = self.clock() + max(seconds_left, 0.0), close, locks, False
        self._detached[d] = None
        self._detached_by_key.setdefault(d.open.key, {})[d] = None
        self._detached_by_user.setdefault(d.user, {})[d] = None

    def let_go(self, d: Durable) -> None:
        """A detached open handed over to another worker: forgotten here, not closed (its
        descriptor is closed by the caller: the other worker has its own)."""
        d.close = None
        self.forget(d.open)

    def seconds_left(self, d: Durable) -> float:
        return max((d.deadline or 0.0) - self.clock(), 0.0)

    def expire(self, effects: list) -> int:
        """Closes the detached opens whose timeout has passed; how many."""
        now = self.clock()
        late = [d for d in self._detached if d.deadline <= now and not d.moving]
        for d in late:
            self._close(d, effects)
        for key, waiting in list(self._awaited.items()):     # reconnects waited long enough
            for then in [t for t, deadline in waiting.items() if deadline <= now]:
                del waiting[then]
                then()
            if not waiting:
                self._awaited.pop(key, None)
        return len(late)

    def _close(self, d: Durable, effects: list) -> None:
        close = d.close
        self._undetach(d)
        d.deadline, d.close = None, None
        if close is not None:
            close(effects)          # (its ServerState.close_open forgets it here too)
        self.forget(d.open)

    def uses(self, fs) -> bool:
        """Whether a detached open reaches its file through this FileSystem."""
        return any(d.open.tree is not None and d.open.tree.fs is fs for d in self._detached)

    def holds_client(self, client_guid: bytes) -> bool:
        """Whether a durable open made by that client (ClientGuid) is kept, attached or not
        (a worker of several keeps serving the client while one is: server.handoff)."""
        return any(d.client_guid == client_guid for d in self._by_open.values())

    def detached_count(self) -> int:
        return len(self._detached)

    # -- the replay cache ------------------------------------------------------------------
    def created(self, key: tuple):
        """What a CreateGuid names: (open, CreateAction), a Pending CREATE, or None. A Pending
        whose CREATE is gone (cancelled, its connection lost) is dropped."""
        entry = self._creates.get(key)
        if isinstance(entry, Pending) and not entry.live():
            del self._creates[key]
            return None
        return entry

    def reserve(self, key: tuple, pending: Pending) -> None:
        earlier = self._creates.get(key)
        if isinstance(earlier, tuple):      # an open its session no longer reaches
            earlier[0].create_key = None
        self._creates[key] = pending

    def release(self, key: tuple, pending: Pending) -> None:
        if self._creates.get(key) is pending:
            del self._creates[key]

    def remember(self, key: tuple, o, action: int) -> None:
        """The CREATE named `key` made the open `o`."""
        self.reserve(key, None)
        self._creates[key] = (o, action)
        o.create_key = key

    def seen(self, o) -> None:
        """A request used the open: its client has had the CREATE's answer, so a replay of
        that CREATE is no replay any more (its CreateGuid is forgotten, as Samba does). (The
        C lookup of a request's open, Connection.open_for, calls this only for an open whose
        create_key is set.)"""
        key = o.create_key
        if key is not None:
            o.create_key = None
            self._creates.pop(key, None)    # (its entry while the open holds its key: see reserve)

    def __len__(self) -> int:
        return len(self._by_open)

    def held(self) -> int:
        """Entries of any kind (for tests: nothing stays once the opens are closed)."""
        return len(self._by_open) + len(self._by_persistent) + len(self._detached) + len(self._detached_by_key) + \
            len(self._detached_by_user) + len(self._creates)
