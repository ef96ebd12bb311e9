"""One user's SMB session and tree through smbprotocol, for the tests that judge what a Unix
account may do with a file and its metadata (descriptor, DOS attributes, times): raw CREATE,
SET_INFO and QUERY_INFO requests. `status` and `set_info` return the NTSTATUS a refusal
answers (0 for success), so that a test can compare it; the other requests raise it."""
from __future__ import annotations

import struct
import uuid

from smbprotocol.connection import Connection
from smbprotocol.create_contexts import CreateContextName, SMB2CreateContextRequest
from smbprotocol.exceptions import SMBResponseException
from smbprotocol.open import Open, SMB2QueryInfoRequest, SMB2QueryInfoResponse, SMB2SetInfoRequest
from smbprotocol.session import Session
from smbprotocol.tree import TreeConnect

IMPERSONATION = 2                  # SMB2 ImpersonationLevel Impersonation
SHARE_ALL = 7                      # FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE
OPEN = 1                           # CreateDisposition FILE_OPEN
READ_CONTROL = 0x20000
INFO_FILE, INFO_SECURITY = 1, 3
BASIC, ACCESS_INFORMATION = 4, 8   # FileBasicInformation, FileAccessInformation
OWNER_GROUP_DACL = 0x7             # a descriptor's parts a user reads with READ_CONTROL


def create_context(name: bytes, data: bytes) -> SMB2CreateContextRequest:
    """A CREATE context (`SecD`, `ExtA`, `MxAc`, ...) with its data."""
    ctx = SMB2CreateContextRequest()
    ctx["buffer_name"], ctx["buffer_data"] = name, data
    return ctx


class UserClient:
    """One SMB session and tree of one user, raw requests through smbprotocol; as a context
    manager, disconnected at the end."""

    def __init__(self, host: str, port: int, user: str, password: str, share: str):
        self.conn = Connection(uuid.uuid4(), host, port)
        self.conn.connect()
        self.session = Session(self.conn, user, password, require_encryption=False)
        self.session.connect()
        self.tree = TreeConnect(self.session, rf"\\{host}\{share}")
        self.tree.connect()
        self.last_contexts = []      # the create contexts of the last CREATE's response

    def __enter__(self) -> UserClient:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    def open(self, name: str, access: int, disposition: int = OPEN, attrs: int = 0, options: int = 0,
             share: int = SHARE_ALL, contexts: list[SMB2CreateContextRequest] | None = None) -> Open:
        f = Open(self.tree, name)
        self.last_contexts = f.create(IMPERSONATION, access, attrs, share, disposition, options,
                                      create_contexts=contexts)
        return f

    def status(self, name: str, access: int, disposition: int = OPEN, attrs: int = 0, options: int = 0,
               **kw) -> int:
        """The NTSTATUS of the open (0: it opened, and is closed again)."""
        try:
            self.open(name, access, disposition, attrs, options, **kw).close()
        except SMBResponseException as e:
            return e.status
        return 0

    def maximal_access(self, name: str, access: int = READ_CONTROL) -> int:
        """What the MxAc create context answers for an open of `name`."""
        mxac = create_context(CreateContextName.SMB2_CREATE_QUERY_MAXIMAL_ACCESS_REQUEST, b"")
        self.open(name, access, contexts=[mxac]).close()
        return next(c["maximal_access"].get_value() for c in self.last_contexts if "maximal_access" in c.fields)

    def _send(self, req):
        return self.conn.receive(self.conn.send(req, sid=self.session.session_id, tid=self.tree.tree_connect_id))

    def set_info(self, f: Open, info_type: int, klass: int, buffer: bytes, parts: int = 0) -> int:
        """The NTSTATUS of the SET_INFO (0: it was set)."""
        req = SMB2SetInfoRequest()
        req["info_type"], req["file_info_class"] = info_type, klass
        req["additional_information"], req["file_id"], req["buffer"] = parts, f.file_id, buffer
        try:
            self._send(req)
        except SMBResponseException as e:
            return e.status
        return 0

    def query_info(self, f: Open, info_type: int, klass: int, parts: int = 0) -> bytes:
        req = SMB2QueryInfoRequest()
        req["info_type"], req["file_info_class"] = info_type, klass
        req["additional_information"], req["output_buffer_length"] = parts, 65536
        req["file_id"] = f.file_id
        resp = SMB2QueryInfoResponse()
        resp.unpack(self._send(req)["data"].get_value())
        return resp["buffer"].get_value()

    def set_sd(self, f: Open, descriptor: bytes, parts: int) -> int:
        """The NTSTATUS of storing the descriptor's `parts` (0: stored)."""
        return self.set_info(f, INFO_SECURITY, 0, descriptor, parts)

    def sd(self, f: Open, parts: int = OWNER_GROUP_DACL) -> bytes:
        """The self-relative descriptor, as the server sends it."""
        return self.query_info(f, INFO_SECURITY, 0, parts)

    def granted(self, f: Open) -> int:
        """The handle's granted access (FileAccessInformation)."""
        return struct.unpack("<I", self.query_info(f, INFO_FILE, ACCESS_INFORMATION))[0]

    def basic(self, f: Open) -> tuple[int, int, int, int, int]:
        """CreationTime, LastAccessTime, LastWriteTime, ChangeTime, FileAttributes."""
        return struct.unpack_from("<qqqqI", self.query_info(f, INFO_FILE, BASIC))

    def set_basic(self, f: Open, attrs: int = 0, times: tuple[int, int, int, int] = (0, 0, 0, 0)) -> int:
        """The NTSTATUS of setting FileBasicInformation: `times` as basic() names them (0
        leaves a time as it is), `attrs` (0 leaves the attributes as they are)."""
        return self.set_info(f, INFO_FILE, BASIC, struct.pack("<qqqqII", *times, attrs, 0))

    def close(self) -> None:
        self.conn.disconnect(True)
