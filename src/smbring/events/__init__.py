"""Event contexts with tevent's semantics, on poll, epoll or io_uring.

    ctx = Context()                    # "auto": uring where the kernel has what it needs
    fde = ctx.add_fd(fd, READ, lambda fde, flags: ...)
    ctx.add_timer(0.5, lambda timer: ...)
    ctx.add_immediate(lambda im: ...)
    ctx.add_signal(signal.SIGUSR1, lambda se, signum, count: ...)
    while ...:
        ctx.loop_once()                # exactly one handler per call

The rules (tevent's, see docs/EVENTS.md for why):

- ``loop_once()`` runs **one** handler. Immediates, then signals, then expired timers are
  handled in the core; only when none is ready does the backend wait for fds, with the next
  timer's deadline as the timeout. Timers never fire early and fire in deadline order.
- fd events are level-triggered (a handler that does not consume is called again) and fair
  (the event just handled goes to the end of the line). READ and WRITE may have separate
  handlers on one fd; ``fde.flags`` can be changed while live; ERROR reports errors and
  hang-ups to a handler that does not want to read.
- ``fde.close()`` stops every event on the fd and closes it; on the uring backend it cancels
  ring ops still pending on it first, so the file is really released (a peer sees EOF).
- An exception from a handler propagates out of ``loop_once()``; the context stays usable.
- Signal handlers run in loop context, never inside the signal. A signal watched here is
  taken away from Python's ``signal`` module until the last watch is cancelled.

The uring backend shares a :class:`smbring.uring.Ring` (``ctx.ring``): ops issued on it with
callbacks complete in the same wait, each completion counting as the step's handler.
"""
from __future__ import annotations

from smbring import _events
from smbring._events import ERROR, READ, WRITE, FdEvent, Immediate, Signal, Timer

__all__ = ["Context", "READ", "WRITE", "ERROR", "FdEvent", "Timer", "Immediate", "Signal",
           "BACKENDS", "best_backend"]

BACKENDS = ("uring", "epoll", "poll")


def best_backend() -> str:
    """uring when this kernel can wait for fd readiness inside io_uring, else epoll."""
    try:
        from smbring import uring
    except ImportError:
        return "epoll"
    if not uring.available():
        return "epoll"
    ops = uring.features().ops
    return "uring" if ops.get("epoll_wait") or ops.get("poll_add") else "epoll"


class Context(_events.Context):
    """Context(backend="auto", ring=None). With the uring backend and no ring, one is made."""

    def __init__(self, backend: str = "auto", ring=None):
        if backend == "auto":
            backend = best_backend()
        self._own_ring = None
        if backend == "uring" and ring is None:
            from smbring.uring import Ring

            ring = self._own_ring = Ring(256)
        super().__init__(backend, ring)

    def close(self) -> None:
        """Cancel every event; a ring this context created is closed too."""
        super().close()
        if self._own_ring is not None:
            self._own_ring.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
