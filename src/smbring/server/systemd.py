"""What systemd offers a service, in a few lines and without a library.

- readiness and state (``sd_notify(3)``): a datagram such as ``READY=1`` to the Unix socket
  named by ``$NOTIFY_SOCKET`` (a path, or ``@name`` in the abstract namespace);
- socket activation (``sd_listen_fds(3)``): systemd opened the listening sockets and passes
  them as descriptors 3, 4, ... when ``$LISTEN_PID`` is this process, ``$LISTEN_FDS`` saying
  how many. The listener then needs no privilege to bind port 445.
"""
from __future__ import annotations

import os
import socket
import stat

LISTEN_FDS_START = 3


def notify(state: str, env=None) -> bool:
    """Sends state ("READY=1", "STOPPING=1", "STATUS=...") to systemd; False when not run
    by systemd (no $NOTIFY_SOCKET) or when the socket cannot be reached."""
    env = os.environ if env is None else env
    address = env.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(state.encode(), address)
        return True
    except OSError:
        return False


def listen_fds(env=None, unset: bool = True) -> list[socket.socket]:
    """The listening sockets systemd passed (none when not socket-activated). With unset,
    the variables are removed so that child processes do not take them for theirs."""
    env = os.environ if env is None else env
    try:
        if int(env.get("LISTEN_PID", "0")) != os.getpid():
            return []
        count = int(env.get("LISTEN_FDS", "0"))
    except ValueError:
        return []
    finally:
        if unset:
            for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
                env.pop(name, None)
    sockets = []
    for fd in range(LISTEN_FDS_START, LISTEN_FDS_START + count):
        if not stat.S_ISSOCK(os.fstat(fd).st_mode):
            raise ValueError(f"descriptor {fd} passed by systemd (LISTEN_FDS) is not a socket")
        os.set_inheritable(fd, False)
        sockets.append(socket.socket(fileno=fd))
    return sockets


def under_journal(env=None) -> bool:
    """Whether stderr goes to the journal ($JOURNAL_STREAM names stderr's device and inode):
    log lines then carry a <priority> prefix and no time of their own."""
    env = os.environ if env is None else env
    try:
        dev, ino = (int(x) for x in env.get("JOURNAL_STREAM", "").split(":"))
        st = os.fstat(2)
    except (ValueError, OSError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)
