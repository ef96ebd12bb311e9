"""An smbprotocol client for the change-notify tests: one connection, session and tree, a
directory opened for listing (to watch), files made through it."""
import uuid

from smbprotocol.connection import Connection
from smbprotocol.open import (CreateDisposition, CreateOptions, DirectoryAccessMask, FileAttributes,
                              ImpersonationLevel, Open, ShareAccess)
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

    def close(self):
        self.conn.disconnect()
