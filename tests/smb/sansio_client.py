"""A client for the sans-I/O connection: SMB2 requests built by hand, handed to a
`Connection` as frames, the answers parsed back into (status, body). No sockets: the connection
is the one a server would run, on real files through the share's real file system."""
import gc
import os
import struct

import smbcore

from smbring.server.users import PasswordLookup
from smbring.smb import wire
from smbring.smb.connection import Connection
from smbring.smb.state import Session, Share
from smbring.vfs.posix import PosixVFS

ALL_ACCESS = 0x001F01FF
SHARE_ALL = 7
FILE_DIRECTORY_FILE = 0x1


def open_descriptors() -> int:
    """How many descriptors this process holds, once the garbage of earlier tests (which may
    hold descriptors in reference cycles) is collected, so that a count taken before some
    requests and one taken after differ only by what those requests left open."""
    gc.collect()
    return len(os.listdir("/proc/self/fd"))


def connection(share_dir, state=None, *, share=None, **options) -> Connection:
    """A new connection (before NEGOTIATE) of a server with one share, "s", on share_dir;
    share: the Share's fields (read_only, guest_ok, ...), options: Connection's (limits,
    local_address, signing_required, ...)."""
    return Connection({"s": Share("s", str(share_dir), **(share or {}))},
                      lookup=PasswordLookup(str(share_dir / "none")), open_fs=PosixVFS, state=state, **options)


def message(command, body=b"", **header) -> bytes:
    """One SMB2 request: a header with the given fields, then the body."""
    return wire.Header(command=command, **header).pack() + body


def parse(message: bytes) -> tuple[wire.Header, bytes]:
    """A response's header and body."""
    return wire.Header.parse(message), message[64:]


def sent(effects) -> list[tuple[wire.Header, bytes]]:
    """The responses the effects send once carried out, parsed (each of a compound's too)."""
    return [parse(m) for frame in smbcore.carry_out(effects) for m in split(frame)]


def split(frame: bytes) -> list[bytes]:
    """The messages of a response frame (one, or a compound chained by NextCommand)."""
    messages = []
    while True:
        next_command = wire.Header.parse(frame).next_command
        if not next_command:
            return messages + [frame]
        messages.append(frame[:next_command])
        frame = frame[next_command:]


class Client:
    """One connection with a logged-on session (no NTLM) and (unless `tree` is False) a tree on
    the share; it asks for `credits` with each request, so compounds and multi-credit requests
    find ids granted."""

    def __init__(self, share_dir, state=None, *, dialect=wire.SMB302, credits=16, tree=True, **options):
        self.conn = connection(share_dir, state, **options)
        self.conn.dialect = dialect
        self.conn.sessions[1] = Session(id=1, valid=True)
        self.credits = credits
        self.next_message_id = 0
        self.tid = 0        # none yet: the tree connect's
        if tree:
            status, self.tid, _body = self.tree_connect()
            assert status == 0, "tree connect failed"

    def message(self, command, body, *, charge=0, **header) -> bytes:
        """A request of this session and tree with the next MessageId (and `charge` of them)."""
        fields = dict(session_id=1, tree_id=self.tid, message_id=self.next_message_id,
                      credit_charge=charge, credits=self.credits)
        fields.update(header)
        self.next_message_id = fields["message_id"] + max(charge, 1)
        return message(command, body, **fields)

    def exchange(self, frame) -> list[tuple[wire.Header, bytes]]:
        """The answers to one frame, parsed: (header, body) each."""
        return sent(self.conn.handle_frame(frame))

    def send(self, command, body, **header):
        """The answers to one request: (status, body) each, late ones of other requests too."""
        return [(h.status, b) for h, b in self.exchange(self.message(command, body, **header))]

    def request(self, command, body, **header):
        """(status, body) of the answer to this request (late answers to others are dropped)."""
        message_id = header.get("message_id", self.next_message_id)
        return next((h.status, b) for h, b in self.exchange(self.message(command, body, **header))
                    if h.message_id == message_id)

    def tree_connect(self, path="\\\\x\\s", **header):
        """(status, the TreeId, the body)."""
        [(h, body)] = self.exchange(self.message(wire.TREE_CONNECT, smbcore.tree_connect_body(path), **header))
        return h.status, h.tree_id, body

    def tree_disconnect(self, tree_id):
        return self.request(wire.TREE_DISCONNECT, smbcore.SHORT_BODY, tree_id=tree_id)[0]

    def create(self, name, access=ALL_ACCESS, share=SHARE_ALL, disposition=wire.FILE_OPEN_IF, options=0, **kw):
        """(status, the FileId or None); kw: create_body's (attributes, contexts, ...)."""
        body = smbcore.create_body(name, access, disposition, options, share_access=share, **kw)
        status, out = self.request(wire.CREATE, body)
        return status, (out[64:80] if status == 0 else None)

    def open(self, name, **kw):
        status, fid = self.create(name, **kw)
        assert status == 0, hex(status)
        return fid

    def close(self, fid, flags=0):
        return self.request(wire.CLOSE, smbcore.close_body(fid, flags))[0]

    def set_info(self, fid, klass, buf, info_type=wire.INFO_FILE, additional=0):
        return self.request(wire.SET_INFO, smbcore.set_info_body(fid, info_type, klass, buf, additional))[0]

    def query_info(self, fid, klass, info_type=wire.INFO_FILE, additional=0, out_len=4096):
        """(status, the information returned)."""
        status, out = self.request(wire.QUERY_INFO, smbcore.query_info_body(fid, info_type, klass, out_len, additional))
        if status not in (0, wire.STATUS_BUFFER_OVERFLOW):
            return status, b""
        return status, buffer(out)

    def query_directory(self, fid, pattern="*", klass=37, flags=0, out_len=65536):
        """(status, the directory entries' bytes); klass 37: FileIdBothDirectoryInformation."""
        body = smbcore.query_directory_body(fid, pattern, klass, flags, out_len)
        status, out = self.request(wire.QUERY_DIRECTORY, body)
        return status, (buffer(out) if status == 0 else b"")

    def delete_on_close(self, fid, delete=True):
        return self.set_info(fid, 13, bytes([delete]))

    def rename(self, fid, new_name, replace=False):
        n = wire.utf16(new_name)
        return self.set_info(fid, 10, struct.pack("<B7xQI", replace, 0, len(n)) + n)

    def lock(self, fid, offset, length, flags):
        return self.send(wire.LOCK, smbcore.lock_body(fid, [(offset, length, flags)]))

    def read(self, fid, offset, length):
        return self.request(wire.READ, smbcore.read_body(fid, length, offset))[0]

    def write(self, fid, data, offset=0):
        return self.request(wire.WRITE, smbcore.write_body(fid, data, offset))[0]

    def flush(self, fid):
        return self.request(wire.FLUSH, smbcore.flush_body(fid))[0]

    def ioctl(self, ctl, fid=b"\xff" * 16, data=b"", max_output=65536):
        """(status, the output buffer)."""
        status, out = self.request(wire.IOCTL, smbcore.ioctl_body(fid, ctl, data, max_output))
        return status, (buffer(out, 32, "<II") if status == 0 else b"")

    def notify(self, fid, completion_filter=0x3, flags=0, out_len=4096):
        return self.send(wire.CHANGE_NOTIFY, smbcore.change_notify_body(fid, completion_filter, flags, out_len))

    def outbox(self):
        return [(h.status, b) for h, b in sent(self.conn.outbox_drain())]


def buffer(body: bytes, at: int = 2, fmt: str = "<HI") -> bytes:
    """A response's variable part named by (Offset, Length) at body[at:], the offset counted
    from the header (QUERY_INFO, QUERY_DIRECTORY, CHANGE_NOTIFY: at 2; IOCTL: "<II" at 32)."""
    offset, length = struct.unpack_from(fmt, body, at)
    return body[offset - 64:offset - 64 + length]
