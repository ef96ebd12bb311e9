"""What a share may hold besides files and directories, and stream names aimed at the stream
store, against a real server and the smbprotocol client: a FIFO, socket or device is refused
at once while other clients go on being served, and nothing of the store can be opened."""
import os
import socket
import stat
import threading
import time
import uuid

import pytest

pytest.importorskip("smbprotocol")

from smbprotocol.connection import Connection  # noqa: E402
from smbprotocol.exceptions import SMBResponseException  # noqa: E402
from smbprotocol.open import (CreateDisposition, CreateOptions, FileAttributes,  # noqa: E402
                              FileInformationClass, FilePipePrinterAccessMask, ImpersonationLevel,
                              Open, ShareAccess)
from smbprotocol.session import Session  # noqa: E402
from smbprotocol.tree import TreeConnect  # noqa: E402

from servers import PASSWORD, USER  # noqa: E402

STATUS_ACCESS_DENIED = 0xC0000022
STATUS_OBJECT_NAME_INVALID = 0xC0000033
STATUS_IO_REPARSE_TAG_NOT_HANDLED = 0xC0000279
# Samba answers IO_REPARSE_TAG_NOT_HANDLED for a FIFO, socket or device opened as a file; the
# VFS refuses them with an error whose errno means ACCESS_DENIED: either is a clear refusal.
REFUSED = (STATUS_IO_REPARSE_TAG_NOT_HANDLED,)   # what Samba answers
READ = FilePipePrinterAccessMask.GENERIC_READ
WRITE = FilePipePrinterAccessMask.GENERIC_WRITE
LIST = 0x00000001       # FILE_LIST_DIRECTORY


class Client:
    """One logged-on connection with the share's tree."""

    def __init__(self, port):
        self.connection = Connection(uuid.uuid4(), "127.0.0.1", port)
        self.connection.connect(timeout=10)
        session = Session(self.connection, USER, PASSWORD)
        session.connect()
        self.tree = TreeConnect(session, r"\\127.0.0.1\share")
        self.tree.connect()

    def create(self, name, access=READ, disposition=CreateDisposition.FILE_OPEN, options=0):
        handle = Open(self.tree, name)
        handle.create(ImpersonationLevel.Impersonation, access, FileAttributes.FILE_ATTRIBUTE_NORMAL,
                      ShareAccess.FILE_SHARE_READ | ShareAccess.FILE_SHARE_WRITE, disposition, options)
        return handle

    def status(self, name, **how):
        """The status CREATE gets (0: opened, and closed again)."""
        try:
            self.create(name, **how).close()
            return 0
        except SMBResponseException as e:
            return e.status

    def read(self, name):
        handle = self.create(name)
        try:
            return handle.read(0, 1 << 16)
        finally:
            handle.close()

    def write(self, name, data):
        handle = self.create(name, access=READ | WRITE, disposition=CreateDisposition.FILE_OVERWRITE_IF)
        try:
            handle.write(data)
        finally:
            handle.close()

    def names(self, directory=""):
        handle = self.create(directory, access=LIST, options=CreateOptions.FILE_DIRECTORY_FILE)
        try:
            entries = handle.query_directory("*", FileInformationClass.FILE_NAMES_INFORMATION)
            return {e["file_name"].get_value().decode("utf-16-le") for e in entries}
        finally:
            handle.close()


@pytest.fixture
def share(server, promptly):
    root = server["share"]
    (root / "file.txt").write_text("plain data")
    (root / "sub").mkdir()
    os.mkfifo(root / "fifo")
    os.symlink("fifo", root / "link-to-fifo")
    os.symlink("../fifo", root / "sub" / "link-up-to-fifo")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(root / "sock"))
    if os.geteuid() == 0:
        try:
            os.mknod(root / "chardev", 0o666 | stat.S_IFCHR, os.makedev(1, 3))      # like /dev/null
        except PermissionError:         # a container without CAP_MKNOD
            pass
    clients = []

    def client():
        clients.append(Client(server["port"]))
        return clients[-1]
    yield root, client
    # a server that regressed is still waiting in open() for the FIFO's other end: be it
    os.close(os.open(root / "fifo", os.O_RDWR | os.O_NONBLOCK))
    for c in clients:
        promptly(lambda: c.connection.disconnect(True), 5)
    listener.close()
    assert "Traceback" not in server["log"].read_text()


@pytest.mark.parametrize("name", ["fifo", "link-to-fifo", "sub\\link-up-to-fifo"])
@pytest.mark.parametrize("access", [READ, WRITE, READ | WRITE], ids=["read", "write", "read-write"])
def test_a_fifo_is_refused_at_once_while_another_client_is_served(share, name, access, promptly):
    _root, client = share
    opener, other = client(), client()
    refused = {}

    def attempt():
        started = time.monotonic()
        refused["status"] = opener.status(name, access=access)
        refused["seconds"] = time.monotonic() - started
    opening = threading.Thread(target=attempt, daemon=True)
    opening.start()
    time.sleep(0.1)                                     # the open is in the server now
    assert promptly(lambda: other.read("file.txt")) == b"plain data", "the other client was not served"
    opening.join(2)
    assert refused.get("status") in REFUSED, f"the FIFO open got {refused or 'no answer'}"
    assert refused["seconds"] < 1.0
    assert promptly(lambda: opener.read("file.txt")) == b"plain data"   # and its client goes on


@pytest.mark.parametrize("name", ["sock", "chardev"])
def test_sockets_and_devices_are_refused_and_listed(share, name, promptly):
    root, client = share
    if not os.path.lexists(root / name):
        pytest.skip("device nodes need root (CAP_MKNOD)")
    c = client()
    for access in (READ, WRITE, READ | WRITE):
        assert promptly(lambda: c.status(name, access=access)) in REFUSED
    assert promptly(lambda: c.status(name, disposition=CreateDisposition.FILE_OVERWRITE_IF,
                                     access=READ | WRITE)) in REFUSED
    assert stat.S_IFMT(os.lstat(root / name).st_mode) in (stat.S_IFSOCK, stat.S_IFCHR)   # untouched
    # listings show them, as Samba's do (they open nothing)
    assert {"fifo", "sock", "link-to-fifo", "file.txt"} <= promptly(c.names)


STORE = ".smbring-streams"


@pytest.fixture
def streams(share):
    """Two files with a named stream each: the store holds two stream directories."""
    root, client = share
    c = client()
    c.write("file.txt:secret", b"hidden")
    c.write("other.txt", b"other")
    c.write("other.txt:secret2", b"hidden too")
    before = sorted(os.walk(root / STORE))
    assert len(before) == 3                              # the store and two ids
    yield root, c
    assert sorted(os.walk(root / STORE)) == before      # nothing made, moved or removed there
    assert c.read("file.txt:secret") == b"hidden"


@pytest.mark.parametrize("name", ["file.txt:..", "file.txt:.", "file.txt:..:$DATA", "file.txt:.:$DATA",
                                  "file.txt:..:$data", "other.txt:."])
def test_stream_names_that_reach_the_store_are_invalid(streams, name):
    _root, c = streams
    for how in [dict(), dict(access=LIST), dict(access=READ | WRITE),
                dict(disposition=CreateDisposition.FILE_OPEN_IF, access=READ | WRITE),
                dict(disposition=CreateDisposition.FILE_CREATE, access=READ | WRITE),
                dict(options=CreateOptions.FILE_NON_DIRECTORY_FILE)]:
        assert c.status(name, **how) == STATUS_OBJECT_NAME_INVALID, how


def test_the_store_cannot_be_named_nor_seen(streams):
    _root, c = streams
    for name in [STORE, STORE.upper(), ".Smbring-Streams", STORE + "\\x", STORE + ":s", "sub\\..\\" + STORE]:
        assert c.status(name) != 0, name
        assert c.status(name, access=LIST, options=CreateOptions.FILE_DIRECTORY_FILE) != 0, name
    assert not {n for n in c.names() if n.casefold() == STORE}
