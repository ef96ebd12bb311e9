"""Acting as a user: the Unix identity a session's file-system calls run as, and a share's
files as one identity sees them.

A server started as root acts for each session as the Unix account its SMB user maps to, as
Samba's smbd does (its ``become_user``): the event loop's thread switches its effective uid,
gid and supplementary groups to the session's before a file-system call of that session,
so the kernel's own permission checks apply and new files belong to the user. The switch is
made with the raw system calls (``smbring.set_thread_credentials``), which act on the
calling thread only; only the effective ids change, so the real and saved uid stay 0: the
thread can come back, and processes of the users cannot signal the server.

Switching costs about 5 us (three credential commits), so it is cached: the thread stays as
the last identity until a call needs another one (`ThreadCredentials.become`). What the
server does for itself in that thread (reading its password file, opening a file it must
open whatever the user could) runs under `ThreadCredentials.as_server`, which returns the
thread to the server's own identity first; its own tasks (signals, reload, shutdown, timers,
the control socket) run each of their steps so (`ThreadCredentials.server_steps`), and a log
record written in the middle of a user's call as the server for a moment (`server_moment`). ``smbring bench identity`` measures the choice
against io_uring personalities (docs/ARCHITECTURE.md, docs/BENCHMARKS.md).

File data I/O does not run in a view's call (the ring submits it later, or a pool's thread
runs it): it runs as the identity that opened the file, see ``vfs.data_identity``; the views
record who opened each descriptor (`ThreadCredentials.data`).
"""
from __future__ import annotations

import collections.abc
import contextlib
import errno
import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field

from smbring.uring import set_thread_credentials
from smbring.vfs.api import STREAMS_DIR
from smbring.vfs.data_identity import DataCredentials
from smbring.vfs.posix import stream_id_by_path


# the identities ThreadCredentials.one_of keeps one instance of (users times their group sets)
MAX_IDENTITIES = 4096


@dataclass(frozen=True)
class Identity:
    """A Unix account as a session acts as it: its name (for the log; two names of one
    account are the same identity), uid, primary gid and supplementary groups (the primary
    one among them, as initgroups makes them)."""

    name: str = field(compare=False)
    uid: int
    gid: int
    groups: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        # the hash computed once: descriptors' owners are counted by identity on every open
        # and close (vfs.data_identity), and the dataclass's own builds a tuple each time
        object.__setattr__(self, "_hash", hash((self.uid, self.gid, self.groups)))

    def __hash__(self) -> int:
        return self._hash


def current_identity(name: str = "server") -> Identity:
    """The calling thread's effective identity now."""
    return Identity(name, os.geteuid(), os.getegid(), tuple(os.getgroups()))


class ThreadCredentials:
    """Switches one thread (the one that creates it: the event loop's) between the server's
    identity and its users'. Any other thread asking is refused: credentials are per thread,
    and a call made on the wrong thread would run as whatever that thread is."""

    def __init__(self) -> None:
        self.server = current_identity()
        self.current = self.server
        self.switches = 0           # how many switches were made (for the tests and the log)
        self._thread = threading.get_ident()
        # who each open file's data I/O runs as (on the ring, in the pool's threads)
        self.data = DataCredentials(self)
        # descriptors of streams, opened by the server in its depot for a user (ShareView)
        self.stream_fds: set[int] = set()
        self._one_of_each: dict[Identity, Identity] = {}    # (see `one_of`)

    def one_of(self, who: Identity) -> Identity:
        """The one instance the views use of every identity equal to `who` (each session of an
        account has its own copy): with one, a request of one connection after another's of
        the same account finds the thread acting as it already at one look (`is`), where
        another copy would make `become` compare the two, and the descriptors' owners be
        counted under a key that is not itself. At most MAX_IDENTITIES are kept; past that
        the table starts again (nothing depends on it but the cost of that comparison)."""
        kept = self._one_of_each.get(who)
        if kept is None:
            if len(self._one_of_each) >= MAX_IDENTITIES:
                self._one_of_each.clear()
            kept = self._one_of_each[who] = who
        return kept

    def become(self, who: Identity) -> None:
        """Makes the thread act as `who` (nothing to do when it already does)."""
        if who == self.current:
            # the same ids and groups (another session of the account): the thread acts as
            # `who` already; remembered as `who` so that its views' next calls find it so
            # at one look (ShareView compares by identity, not by value)
            self.current = who
            return
        if threading.get_ident() != self._thread:
            raise RuntimeError("credentials switched from a thread they do not belong to")
        try:
            set_thread_credentials(who.uid, who.gid, who.groups)
        except OSError:
            # half switched at worst (euid 0): go back to the server's identity entirely
            self.current = None
            set_thread_credentials(self.server.uid, self.server.gid, self.server.groups)
            self.current = self.server
            raise
        self.current = who
        self.switches += 1

    def server_thread(self) -> None:
        """Run first in a new thread of the server's (a thread pool's): a thread starts with
        the credentials of the one that started it, acting as some user perhaps."""
        set_thread_credentials(self.server.uid, self.server.gid, self.server.groups)

    def on_own_thread(self) -> bool:
        """Whether the calling thread is the one these credentials switch (the event loop's);
        every other thread of the server acts as the server (see `server_thread`)."""
        return threading.get_ident() == self._thread

    def as_server(self):
        """A context in which the thread acts as the server. It stays so afterwards: the next
        file-system call of a session switches again if it must. On another thread (one of
        the server's, acting as the server already) it does nothing."""
        return self._as(self.server) if self.on_own_thread() else contextlib.nullcontext()

    @contextmanager
    def server_moment(self):
        """The server's work done in the middle of a session's (a log record written while a
        user's file-system call runs: rotating the log): as the server, then back to whoever
        the thread acted as, so that the rest of the user's call is not made as the server."""
        if not self.on_own_thread() or self.current == self.server:
            yield
            return
        before = self.current
        self.become(self.server)
        try:
            yield
        finally:
            self.become(before)

    def server_steps(self, coro):
        """`coro` as a coroutine each of whose steps starts as the server: for the server's
        own tasks (signals, reload, shutdown, timers, the control socket), which would
        otherwise resume as whichever session's user the event loop's thread acted as last."""
        return ServerSteps(coro, self.to_server)

    def to_server(self) -> None:
        """Makes the thread act as the server (nothing to do on another thread)."""
        if self.on_own_thread():
            self.become(self.server)

    @contextmanager
    def _as(self, who: Identity):
        self.become(who)
        yield


class ServerSteps(collections.abc.Coroutine):
    """Wraps a coroutine so that every step (the first, and each resumption after an await)
    runs after `enter()`: the thread is made the server's again before any of the server's
    code runs, whatever ran on the loop in between. asyncio runs it as a task as it runs any
    coroutine (send, throw, close)."""

    def __init__(self, coro, enter):
        self._coro = coro       # enter(): makes the thread the server's
        self._enter = enter
        self.__name__ = self.__qualname__ = getattr(coro, "__qualname__", "server work")

    def send(self, value):
        self._enter()
        return self._coro.send(value)

    def throw(self, typ, val=None, tb=None):
        self._enter()
        if val is None and tb is None:
            return self._coro.throw(typ)
        return self._coro.throw(typ, val, tb)

    def close(self):
        self._enter()
        return self._coro.close()

    def __await__(self):
        return self

    def __iter__(self):
        return self

    def __next__(self):
        return self.send(None)

    def __repr__(self) -> str:
        return f"<as the server: {self._coro!r}>"


class NoSwitch:
    """Where the server is not root: everything runs as the server's user."""

    server = None

    @staticmethod
    @contextmanager
    def as_server():
        yield

    server_moment = as_server

    @staticmethod
    def server_steps(coro):
        return coro

    @staticmethod
    def to_server() -> None:
        pass


# What a share's file system offers (smbring.smb.fs.FileSystem), each call made as the view's
# identity; tests/vfs/test_identity_views.py checks that the list covers the whole protocol.
CALLS = ("open", "open_stat", "stat", "match_case", "match_case_in", "dfs_link", "mkdir", "remove", "may_delete", "rename", "link", "statvfs", "remove_tree",
         "stream_id", "stream_id_of", "stream_parts", "streams", "stream_names", "make_stream_dir", "create_stream",
         "own_stream", "remove_streams", "rename_stream",
         "may_access_open", "close_file", "set_range_locks", "range_locked", "fstat", "size", "read_head", "write_head", "copy_range",
         "ftruncate", "fchmod", "set_write_bits", "fchown_group", "fchown_user", "give_new_file", "opened_parts", "set_times", "set_times_as_writer", "allocate", "names", "entry_stat", "entry_details", "may_access", "may_open",
         "reachable", "has_default_acl", "get_dos", "get_sd_and_dos",
         "get_dos_at", "set_dos", "get_sd", "set_sd", "list_eas", "set_ea")


class ShareView:
    """A share's files as one identity reaches them: every call of the FileSystem protocol
    first makes the thread act as that identity, then goes to the share's one `PosixVFS`
    (whose root descriptor the server opened, as itself, and shares). Closing a view closes
    nothing: the root descriptor is the server's."""

    def __init__(self, base, identity: Identity | None, creds: ThreadCredentials | None):
        self.base = base
        self.root = base.root
        self.creds = creds if identity is not None else None
        if self.creds is not None:
            identity = self.creds.one_of(identity)
        self.identity = identity
        # makes the thread act as the view's identity, if it does not already: the one place
        # that decides, bound once for the view's life (a tree connect's)
        self._act = _switching(self.creds, identity)
        # each call bound once too: the class's `_acting` would look the method up by name on
        # every call of every CREATE
        for name in CALLS:
            method = getattr(base, name, None)
            if method is None:
                continue
            kind = getattr(ShareView.__dict__[name], "acting", False)
            if kind is True:
                setattr(self, name, self._acting_as(method))
            elif kind and self.creds is not None:
                # (the path and descriptor calls too: their class's wrappers would look the
                # method up by name, and make two calls more, on every call)
                setattr(self, name, kind(self.creds, identity, method))
        if self.creds is not None and "fstat" in CALLS:
            self.fstat = _fstat_noting_device(self.creds, identity, base.fstat)

    def _acting_as(self, method):
        """`method` of the base, made as the view's identity (see `_switching`). A view
        without identity makes no switch at all: the base's method itself."""
        if self.creds is None:
            return method
        call = _switching(self.creds, self.identity, method)
        call.__name__ = call.__qualname__ = method.__name__
        return call

    def close(self) -> None:
        pass

    def open(self, parts, flags, mode=0o644):
        # (_act_on written out, its answer kept for _opened: every CREATE opens)
        depot = bool(parts) and parts[0] == STREAMS_DIR
        if depot:
            self._as_server()
        else:
            switch = self._act
            switch()
        fd = self.base.open(parts, flags, mode)
        self._opened(fd, depot)
        return fd

    def open_stat(self, parts, flags, mode=0o644):
        depot = bool(parts) and parts[0] == STREAMS_DIR     # (as in `open`)
        if depot:
            self._as_server()
        else:
            switch = self._act
            switch()
        fd, st = self.base.open_stat(parts, flags, mode)
        # (a CREATE may keep it as the open's; its device saves the data modules a stat)
        self._opened(fd, depot, st.st_dev)
        return fd, st

    def adopt_descriptor(self, fd: int, device: int | None = None) -> None:
        """A descriptor of a file of the share opened elsewhere (another worker's durable
        open, handed over: server.moves) is this view's from now on: its data I/O runs as
        the view's identity, as if opened through it."""
        self._opened(fd, False, device)

    def _opened(self, fd, depot: bool, device: int | None = None) -> None:
        """`depot`: fd is a stream's, opened in the depot (`_in_depot` of its path)."""
        if self.creds is not None:
            # its data I/O runs as the identity, a stream's too (the server opened it for
            # the user, who was granted it by the stream's file: smb/commands/create.py)
            self.creds.data.opened(fd, self.identity, device)
            if depot:
                self.creds.stream_fds.add(fd)
            else:
                self.creds.stream_fds.discard(fd)

    def close_file(self, fd):
        if self.creds is not None:
            self.creds.data.closed(fd)
            self.creds.stream_fds.discard(fd)
        switch = self._act      # (see _act_on)
        switch()
        self.base.close_file(fd)

    def give_new_file(self, fd, uid):
        """As the server: the caller made the file just now (`inherit owner`)."""
        self._as_server()
        self.base.give_new_file(fd, uid)

    def set_write_bits(self, fd, mode):
        """As the server: the caller checked the open was granted FILE_WRITE_ATTRIBUTES, and
        the base checks only write bits change."""
        self._as_server()
        self.base.set_write_bits(fd, mode)

    def set_times_as_writer(self, fd, atime_ns, mtime_ns):
        """Asked as the view's identity whether it may write the file (its descriptor's
        inode); set as the server if so."""
        switch = self._act
        switch()
        if not self.base.may_access_open(fd, os.W_OK):
            raise PermissionError(errno.EPERM, "may not write the file, so not set its times")
        self._as_server()
        self.base.set_times(fd, atime_ns, mtime_ns)

    def mkdir(self, parts, mode=0o755):
        self._act_on(parts)
        self.base.mkdir(parts, mode)

    # -- alternate data streams: the depot is the server's ------------------------------------
    # A stream is a file in the server's depot (vfs/posix.py), reached as the server once the
    # user's rights on its base file were judged as the user (smb/commands/create.py): paths
    # into the depot, and the metadata of stream descriptors, are the server's to handle.
    def _act_on(self, parts) -> None:
        if _in_depot(parts):
            self._as_server()
        else:
            # (`_act` is the view's own, not its class's: called as a method, the lookup
            # would not be specialized, a few tens of nanoseconds more on every call)
            switch = self._act
            switch()

    def _act_on_fd(self, fd) -> None:
        if self.creds is not None and fd in self.creds.stream_fds:
            self._as_server()
        else:
            switch = self._act      # (see _act_on)
            switch()

    def _as_server(self) -> None:
        if self.creds is not None:
            self.creds.to_server()

    def stream_id_of(self, fd, create=False):
        """The id is read (or stored) on the file as the user, with the user's rights on it;
        whether its stream directory belongs to that file is the server's to check."""
        self._act()
        found = self.base.stream_key(fd, create)
        if found is None:
            return None
        self._as_server()
        return found[0] if self.base.claim_streams(*found, create) else None

    def stream_id(self, parts, create=False, sole_name=False):
        """PosixVFS.stream_id through this view: the file opened as the user, the id read
        as `stream_id_of` reads it."""
        return stream_id_by_path(self, parts, create, sole_name)

    def streams(self, sid):
        self._as_server()
        return self.base.streams(sid)

    def stream_names(self, sid):
        self._as_server()
        return self.base.stream_names(sid)

    def make_stream_dir(self, sid):
        self._as_server()
        self.base.make_stream_dir(sid)

    def create_stream(self, sid, stream, owner, mode=0o600):
        """Made as the server (the depot is its own), given to the file's owner (see
        PosixVFS.create_stream); its data I/O runs as this view's identity, as any open's."""
        self._as_server()
        fd = self.base.create_stream(sid, stream, owner, mode)
        self._opened(fd, _in_depot(self.base.stream_parts(sid, stream)))
        return fd

    def own_stream(self, sid, stream, owner):
        self._as_server()
        self.base.own_stream(sid, stream, owner)

    def remove_streams(self, sid, of=None):
        self._as_server()
        self.base.remove_streams(sid, of)

    def rename_stream(self, sid, old, new, replace):
        self._as_server()
        self.base.rename_stream(sid, old, new, replace)


def _switching(creds: ThreadCredentials | None, identity: Identity | None, method=None):
    """The one place that decides whether to switch: a function that makes the thread act as
    `identity` unless it does already, then calls `method` if one is given (a view's `_act`
    has none). The thread mostly does act so: one look at who it is, compared by identity
    (`become` makes `current` this very object), before `become` does its own checks.
    Without credentials (a view without identity) nothing switches.

    The check is written in both shapes rather than the wrapper calling `act`: these run on
    every file-system call, and a call more costs about a fifth of the wrapper's time."""
    if creds is None:
        return _stay if method is None else method
    if method is None:
        def act() -> None:
            if creds.current is not identity:
                creds.become(identity)
        return act

    def call(*args, **kw):
        if creds.current is not identity:
            creds.become(identity)
        return method(*args, **kw)
    return call


def _stay() -> None:
    pass


def _in_depot(parts) -> bool:
    return bool(parts) and parts[0] == STREAMS_DIR


def _on_path(name: str):
    def call(self, parts, *args, **kw):
        self._act_on(parts)
        return getattr(self.base, name)(parts, *args, **kw)
    call.__name__ = name
    call.__doc__ = f"FileSystem.{name}, as the view's identity (as the server in the stream depot)."
    call.acting = _path_switching      # (what a view with an identity binds for itself)
    return call


def _path_switching(creds: ThreadCredentials, identity: Identity, method):
    """`_on_path`'s call, bound once for a view's life: as the server in the stream depot,
    else as `identity` (`_act_on`, written out)."""
    def call(parts, *args, **kw):
        if parts and parts[0] == STREAMS_DIR:
            creds.to_server()
        elif creds.current is not identity:
            creds.become(identity)
        return method(parts, *args, **kw)
    call.__name__ = call.__qualname__ = method.__name__
    return call


def _fd_switching(creds: ThreadCredentials, identity: Identity, method):
    """`_on_fd`'s call, bound once for a view's life: as the server on a stream's
    descriptor, else as `identity` (`_act_on_fd`, written out)."""
    stream_fds = creds.stream_fds       # (one set for the credentials' life)

    def call(fd, *args, **kw):
        if fd in stream_fds:
            creds.to_server()
        elif creds.current is not identity:
            creds.become(identity)
        return method(fd, *args, **kw)
    call.__name__ = call.__qualname__ = method.__name__
    return call


def _fstat_noting_device(creds: ThreadCredentials, identity: Identity, method):
    """fstat as `identity`, its device noted for a descriptor a view opened (the data
    modules ask which device a descriptor is on: a file made by O_CREAT, whose open read no
    stat, is then known from the first fstat of it instead of one more of their own)."""
    data = creds.data

    def fstat(fd):
        if creds.current is not identity:
            creds.become(identity)
        st = method(fd)
        data.seen(fd, st.st_dev)
        return st
    return fstat


def _on_fd(name: str):
    def call(self, fd, *args, **kw):
        self._act_on_fd(fd)
        return getattr(self.base, name)(fd, *args, **kw)
    call.__name__ = name
    call.acting = _fd_switching
    call.__doc__ = f"FileSystem.{name}, as the view's identity (as the server on a stream's descriptor)."
    return call


# the calls that name a path (into the depot, for a stream), or an open file's metadata (a
# stream's: the server's file); data calls (ftruncate, allocate) on a stream's descriptor
# run as the user, as its READs and WRITEs do
for _name in ("stat", "remove", "may_delete", "may_open"):
    setattr(ShareView, _name, _on_path(_name))
for _name in ("fchmod", "set_times", "get_dos", "get_sd_and_dos", "set_dos", "get_sd", "set_sd", "list_eas",
              "set_ea"):
    setattr(ShareView, _name, _on_fd(_name))


def _acting(name: str):
    # (the class's: what the protocol names, for a look at the class; a view binds its own
    # in __init__, which is what its calls find first)
    def call(self, *args, **kw):
        self._act()
        return getattr(self.base, name)(*args, **kw)
    call.__name__ = name
    call.__doc__ = f"FileSystem.{name}, as the view's identity."
    call.acting = True      # (what a view binds for itself: the calls the class does not define)
    return call


for _name in CALLS:
    if _name not in ShareView.__dict__:
        setattr(ShareView, _name, _acting(_name))
del _name
