import os
import socket

import pytest

from smbring import uring

if not uring.available():
    pytest.skip(f"io_uring unavailable: {uring.unavailable_reason()}", allow_module_level=True)


@pytest.fixture
def ring():
    r = uring.Ring(64)
    yield r
    r.close()


@pytest.fixture
def datafile(tmp_path):
    """A 64 KiB file of known content on the test's (real) file system."""
    path = tmp_path / "data.bin"
    data = os.urandom(65536)
    path.write_bytes(data)
    fd = os.open(path, os.O_RDWR)
    yield fd, data, path
    try:
        os.close(fd)
    except OSError:
        pass


@pytest.fixture
def sockpair():
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


@pytest.fixture
def complete(ring):
    """complete(req) submits and waits for req's last completion, then returns it."""

    def wait_for(req, timeout=5.0):
        for _ in range(1000):
            if req.done:
                return req
            ring.wait(1, timeout=timeout)
        raise AssertionError(f"{req!r} never completed")

    return wait_for
