"""Who a file's data I/O runs as: the identity that opened it, wherever the I/O runs.

A server started as root acts for each session as its Unix account (``vfs.identity``): the
event loop's thread switches its credentials before each file-system call of a session. Data
I/O does not run in that call: a WRITE's data goes to an io_uring op that the loop submits
later (in a batch, after whatever ran meanwhile: the server's own work switches the thread
back to root), to a thread of the pool (which has credentials of its own), or through the
``O_DIRECT`` twin that ``direct_writes`` opened as the server. The kernel decides things by
the credentials a write runs with, not only by the descriptor's: a write without
CAP_FSETID clears a file's setuid and setgid bits (``file_remove_privs``), and disk quotas
and ext4's reserved blocks hold for a writer without CAP_SYS_RESOURCE. Run as root, a user
allowed to write to a group-writable setgid program could replace it and keep the bit.

So every data op runs as the identity that opened its descriptor (`DataCredentials.owner`;
`ShareView` records each open and close):

- on the ring: the op names a registered io_uring personality of that identity
  (``IORING_REGISTER_PERSONALITY``, made while the loop's thread acts as it) in its SQE, so
  the kernel runs it with those credentials whenever it is submitted and on whichever of its
  own threads it runs. One personality per identity (uid, gid and supplementary groups:
  never shared between credentials that differ in any), registered at its first op and kept
  after the identity's last file is closed (a client copying files one at a time would
  otherwise register and unregister one per file); at most PERSONALITIES_KEPT at once (the
  least recently used goes), and all go at `release` (the server stopping) or with their
  ring. One that ops still use is unregistered only when they have completed: an SQE never
  names an id that may be reused. A kept personality is only ever named by an op on a
  descriptor its identity opened (`owner`): keeping it lends its credentials to nobody.
- in a thread of the pool: the thread switches its own credentials to the identity first
  (the raw per-thread system calls, as the loop's thread does; kept until another identity
  needs the thread);
- inline in the loop's thread (the posix module): the thread acts as the identity first.

A descriptor nobody recorded has no owner: its data ops are refused (EACCES) rather than run
as the server. A server that is not root acts as nobody else and has none of this.
"""
from __future__ import annotations

import errno
import functools
import logging
import threading
from collections import OrderedDict

from smbring.uring import set_thread_credentials

log = logging.getLogger("smbring.vfs")

PERSONALITIES_KEPT = 64         # registered io_uring personalities at most (a ring holds 65535)


class Personality:
    """An identity's registered personality on a ring, and the ops prepared with it that have
    not completed (`busy`): a retired one is unregistered when the last completes."""

    __slots__ = ("ring", "id", "busy", "retired")

    def __init__(self, ring, pid: int):
        self.ring, self.id, self.busy, self.retired = ring, pid, 0, False


class DataCredentials:
    """The owners of open descriptors, and the means of running their data I/O as them (see
    the module's docstring). Belongs to the server's `ThreadCredentials` (`creds`): its
    descriptor bookkeeping and ring calls run in the event loop's thread only; `in_worker`
    gives a call that a pool's thread runs."""

    def __init__(self, creds, kept: int = PERSONALITIES_KEPT):
        self.creds = creds
        self.kept = kept
        self._owners: dict[int, object] = {}         # fd -> the Identity that opened it
        self._devices: dict[int, int] = {}           # fd -> its st_dev, where the open read it
        self._twins: dict[int, int] = {}             # a module's second fd -> the client's fd
        self._ring = None                            # the Ring the personalities belong to
        self._personalities: OrderedDict = OrderedDict()   # Identity -> Personality, LRU first
        self._worker = threading.local()             # .who: what a pool's thread acts as
        self.registered = self.unregistered = 0      # (for the tests and the log)

    # -- descriptors --------------------------------------------------------------------------
    def opened(self, fd: int, who, device: int | None = None) -> None:
        """`who` opened fd (the view it was opened through acts as `who`); `device`: its
        st_dev, where the open read its stat already (the modules ask which device a
        descriptor is on: see `device`). A number closed without a word is reused now: its
        owner is this one. (Nothing is counted per identity: its personality stays for its
        next file whatever it holds open.)"""
        self._owners[fd] = who
        if device is None:
            self._devices.pop(fd, None)
        else:
            self._devices[fd] = device

    def closed(self, fd: int) -> None:
        """fd is being closed: it has no owner any more."""
        self._owners.pop(fd, None)
        self._devices.pop(fd, None)

    def seen(self, fd: int, device: int) -> None:
        """fd's st_dev, read by a stat of it: kept where a view opened fd (an open file
        never moves to another device)."""
        if fd in self._owners:
            self._devices[fd] = device

    def device(self, fd: int) -> int | None:
        """The device fd's file is on (its st_dev: an open file never moves to another), as
        its open read it; None where it did not (the caller asks fstat)."""
        return self._devices.get(fd)

    def twin(self, fd: int, of: int) -> None:
        """fd is another descriptor of the file `of` names, opened by a module for its own
        use (direct_writes' O_DIRECT twin): its data I/O runs as `of`'s owner."""
        self._twins[fd] = of

    def forget_twin(self, fd: int) -> None:
        self._twins.pop(fd, None)

    def owner(self, fd: int):
        """The identity fd's data I/O runs as; PermissionError (EACCES) for a descriptor no
        view opened: never run as the server by default."""
        who = self._owners.get(self._twins.get(fd, fd))
        if who is None:
            log.error("data I/O on descriptor %d, which no session opened: refused", fd)
            raise PermissionError(errno.EACCES, "the descriptor has no owner")
        return who

    # -- in the event loop's thread -----------------------------------------------------------
    def act_here(self, fd: int) -> None:
        """Makes the loop's thread act as fd's owner (for I/O made inline)."""
        who = self.owner(fd)
        if self.creds.current is not who:       # (mostly it does already: no call)
            self.creds.become(who)

    # -- on the ring ----------------------------------------------------------------------------
    def personality(self, ring, fd: int) -> Personality:
        """fd's owner's personality on `ring` (registered now if it has none), counted busy
        until `done` is called for the op prepared with it."""
        who = self.owner(fd)
        if ring is not self._ring:
            # another ring: the last one's personalities go with it (or when their ops end)
            for p in self._personalities.values():
                self._retire(p)
            self._personalities.clear()
            self._ring = ring
        p = self._personalities.get(who)
        if p is None:
            # the kernel takes the calling thread's credentials as they are now
            self.creds.become(who)
            p = Personality(ring, ring.register_personality())
            self.registered += 1
            self._personalities[who] = p
            while len(self._personalities) > self.kept:
                self._retire(self._personalities.popitem(last=False)[1])
        else:
            self._personalities.move_to_end(who)
        p.busy += 1
        return p

    def release(self) -> None:
        """Every personality goes (each once the ops stamped with it have completed): the
        server is stopping. One made later (by an op after all) is bounded as before."""
        for p in self._personalities.values():
            self._retire(p)
        self._personalities.clear()

    @property
    def kept_now(self) -> int:
        """How many personalities are registered for new ops (for the tests and the log)."""
        return len(self._personalities)

    def done(self, p: Personality) -> None:
        """An op prepared with p has completed (or will never be submitted)."""
        p.busy -= 1
        if p.retired and not p.busy:
            self._unregister(p)

    def _retire(self, p: Personality) -> None:
        """No new op is stamped with p; it goes once the ops that are stamped have completed."""
        p.retired = True
        if not p.busy:
            self._unregister(p)

    def _unregister(self, p: Personality) -> None:
        pid, p.id = p.id, 0
        if not pid or p.ring.closed:      # (a closed ring's personalities went with it)
            return
        try:
            p.ring.unregister_personality(pid)
            self.unregistered += 1
        except OSError as e:
            log.warning("io_uring personality %d not unregistered: %s", pid, e)

    # -- in a pool's thread ---------------------------------------------------------------------
    def in_worker(self, fd: int, call, *args):
        """`call(*args)` as a function for a pool's thread: it acts as fd's owner first."""
        return functools.partial(self._as, self.owner(fd), call, args)

    def _as(self, who, call, args):
        if getattr(self._worker, "who", None) != who:
            self._worker.who = None
            try:
                set_thread_credentials(who.uid, who.gid, who.groups)
            except OSError:
                # half switched at worst: back to the server's identity entirely
                server = self.creds.server
                set_thread_credentials(server.uid, server.gid, server.groups)
                self._worker.who = server
                raise
            self._worker.who = who
        return call(*args)
