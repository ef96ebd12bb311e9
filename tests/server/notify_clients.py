"""An smbprotocol client for the change-notify tests: one connection, session and tree, a
directory opened for listing (to watch), files made and deleted through it; `clients_of`, the
tests' `clients` fixture's maker of such clients."""
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from smbprotocol.connection import Connection
from smbprotocol.open import (CreateDisposition, CreateOptions, DirectoryAccessMask, FileAttributes,
                              FilePipePrinterAccessMask, ImpersonationLevel, Open, ShareAccess)
from smbprotocol.session import Session
from smbprotocol.tree import TreeConnect

from servers import PASSWORD, USER


class Client:
    def __init__(self, port: int, share: str = "share", user: str = USER, password: str = PASSWORD):
        self.conn = Connection(uuid.uuid4(), "127.0.0.1", port)
        self.conn.connect()
        self.session = Session(self.conn, user, password)
        self.session.connect()
        self.tree = TreeConnect(self.session, rf"\\127.0.0.1\{share}")
        self.tree.connect()

    def open_dir(self, name: str = "") -> Open:
        o = Open(self.tree, name)
        o.create(ImpersonationLevel.Impersonation, DirectoryAccessMask.FILE_LIST_DIRECTORY,
                 FileAttributes.FILE_ATTRIBUTE_DIRECTORY, ShareAccess.FILE_SHARE_READ | ShareAccess.FILE_SHARE_WRITE
                 | ShareAccess.FILE_SHARE_DELETE, CreateDisposition.FILE_OPEN, CreateOptions.FILE_DIRECTORY_FILE)
        return o

    def make_file(self, name: str) -> None:
        o = Open(self.tree, name)
        o.create(ImpersonationLevel.Impersonation, 0x12019F, FileAttributes.FILE_ATTRIBUTE_NORMAL,
                 ShareAccess.FILE_SHARE_READ, CreateDisposition.FILE_CREATE, CreateOptions.FILE_NON_DIRECTORY_FILE)
        o.write(b"data", 0)
        o.close()

    def delete_file(self, name: str) -> None:
        """Deletes a file through this session (an open with delete on close)."""
        o = Open(self.tree, name)
        o.create(ImpersonationLevel.Impersonation, FilePipePrinterAccessMask.DELETE,
                 FileAttributes.FILE_ATTRIBUTE_NORMAL, ShareAccess.FILE_SHARE_READ | ShareAccess.FILE_SHARE_DELETE,
                 CreateDisposition.FILE_OPEN,
                 CreateOptions.FILE_NON_DIRECTORY_FILE | CreateOptions.FILE_DELETE_ON_CLOSE)
        o.close()

    def close(self):
        self.conn.disconnect()


@contextmanager
def clients_of(port: int, password: str) -> Iterator[Callable[..., Client]]:
    """Yields make(user, share="share"): a new client of that account on the server's share;
    every client made is closed at the end."""
    made = []

    def make(user: str, share: str = "share") -> Client:
        made.append(Client(port, share, user=user, password=password))
        return made[-1]
    try:
        yield make
    finally:
        for c in made:
            c.close()
