"""A client for the sans-I/O connection: SMB2 requests built by hand, handed to a
`Connection` as frames, the answers parsed back into (status, body). No sockets: the connection
is the one a server would run, on real files through the share's real file system."""
import struct

from smbcore import carry_out

from smbring.server.users import PasswordLookup
from smbring.smb import wire
from smbring.smb.connection import Connection
from smbring.smb.state import Session, Share
from smbring.vfs.posix import PosixVFS

ALL_ACCESS = 0x001F01FF
SHARE_ALL = 7
FILE_DIRECTORY_FILE = 0x1


class Client:
    """One connection with a logged-on session (no NTLM) and a tree on the share."""

    def __init__(self, share_dir, state=None, **share_options):
        share = Share("s", str(share_dir), **share_options)
        self.conn = Connection({"s": share}, lookup=PasswordLookup(str(share_dir / "none")),
                               open_fs=PosixVFS, state=state)
        self.conn.dialect = wire.SMB302
        self.conn.sessions[1] = Session(id=1, valid=True)
        self.tid = 0
        status, body = self.request(wire.TREE_CONNECT, struct.pack("<HHHH", 9, 0, 72, 10) +
                                    wire.utf16("\\\\x\\s"))
        assert status == 0, "tree connect failed"
        self.tid = self.last_tree_id

    def send(self, command, body):
        """The answers to one request: (status, body) each, late ones of other requests too."""
        hdr = wire.Header(command=command, session_id=1, tree_id=self.tid,
                          message_id=self.conn.credits.low, credits=1)
        return [self._parse(m) for m in carry_out(self.conn.handle_frame(hdr.pack() + body))]

    def request(self, command, body):
        return self.send(command, body)[0]

    def _parse(self, message: bytes):
        self.last_tree_id = struct.unpack_from("<I", message, 36)[0]
        return struct.unpack_from("<I", message, 8)[0], message[64:]

    def create(self, name, access=ALL_ACCESS, share=SHARE_ALL, disposition=wire.FILE_OPEN_IF, options=0):
        n = wire.utf16(name)
        body = struct.pack("<HBBIQQIIIIIHHII", 57, 0, 0, 2, 0, 0, access, 0, share, disposition,
                           options, 120, len(n), 0, 0) + n
        status, out = self.request(wire.CREATE, body)
        return status, (out[64:80] if status == 0 else None)

    def open(self, name, **kw):
        status, fid = self.create(name, **kw)
        assert status == 0, hex(status)
        return fid

    def close(self, fid, flags=0):
        return self.request(wire.CLOSE, struct.pack("<HHI", 24, flags, 0) + fid)[0]

    def set_info(self, fid, klass, buf, info_type=wire.INFO_FILE, additional=0):
        body = struct.pack("<HBBIHHI", 33, info_type, klass, len(buf), 96, 0, additional) + fid + buf
        return self.request(wire.SET_INFO, body)[0]

    def query_info(self, fid, klass, info_type=wire.INFO_FILE, additional=0, out_len=4096):
        """(status, the information returned)."""
        body = struct.pack("<HBBIHHIII", 41, info_type, klass, out_len, 0, 0, 0, additional, 0) + fid + b"\0"
        status, out = self.request(wire.QUERY_INFO, body)
        if status not in (0, wire.STATUS_BUFFER_OVERFLOW):
            return status, b""
        offset, length = struct.unpack_from("<HI", out, 2)
        return status, out[offset - 64:offset - 64 + length]

    def query_directory(self, fid, pattern="*", klass=37, flags=0):
        """(status, the directory entries' bytes); klass 37: FileIdBothDirectoryInformation."""
        n = wire.utf16(pattern)
        body = struct.pack("<HBBI", 33, klass, flags, 0) + fid + struct.pack("<HHI", 96, len(n), 65536) + n
        status, out = self.request(wire.QUERY_DIRECTORY, body)
        if status:
            return status, b""
        offset, length = struct.unpack_from("<HI", out, 2)
        return status, out[offset - 64:offset - 64 + length]

    def delete_on_close(self, fid, delete=True):
        return self.set_info(fid, 13, bytes([delete]))

    def rename(self, fid, new_name):
        n = wire.utf16(new_name)
        return self.set_info(fid, 10, struct.pack("<B7xQI", 0, 0, len(n)) + n)

    def lock(self, fid, offset, length, flags):
        body = struct.pack("<HHI", 48, 1, 0) + fid + struct.pack("<QQII", offset, length, flags, 0)
        return self.send(wire.LOCK, body)

    def read(self, fid, offset, length):
        body = struct.pack("<HBBIQ", 49, 80, 0, length, offset) + fid + struct.pack("<IIIHH", 0, 0, 0, 0, 0) + b"\0"
        return self.request(wire.READ, body)[0]

    def notify(self, fid, completion_filter=0x3):
        body = struct.pack("<HHI", 32, 0, 4096) + fid + struct.pack("<II", completion_filter, 0)
        return self.send(wire.CHANGE_NOTIFY, body)

    def outbox(self):
        return [self._parse(m) for m in carry_out(self.conn.outbox_drain())]
