"""What each command needs before its handler runs, declared once (Samba's
smbd_smb2_table): the table the connection checks every request against."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from smbring.smb import wire
from smbring.smb.commands.change_notify import h_change_notify
from smbring.smb.commands.create import h_close, h_create
from smbring.smb.commands.directory import h_query_directory
from smbring.smb.commands.echo import h_echo
from smbring.smb.commands.info import h_query_info, h_set_info
from smbring.smb.commands.ioctl import h_ioctl
from smbring.smb.commands.lock import h_lock
from smbring.smb.commands.negotiate import h_negotiate
from smbring.smb.commands.oplock_break import h_oplock_break
from smbring.smb.commands.read_write import h_flush, h_read, h_write
from smbring.smb.commands.session import h_logoff, h_session_setup
from smbring.smb.commands.tree import h_tree_connect, h_tree_disconnect

ALLOWED_FLAGS = (wire.FLAGS_RELATED | wire.FLAGS_SIGNED | wire.FLAGS_DFS | wire.FLAGS_PRIORITY_MASK |
                 wire.FLAGS_REPLAY)
FLAGS_NOT_ALLOWED = ~ALLOWED_FLAGS      # a request with any of these is INVALID_PARAMETER


@dataclass(frozen=True)
class Command:
    """What a command needs before its handler runs, declared once (Samba's smbd_smb2_table):
    a valid session (else USER_SESSION_DELETED), a tree connect (else NETWORK_NAME_DELETED),
    and how many bytes it sends and asks to receive (checked against MaxTransactSize, its
    CreditCharge and what the frame's responses may still take)."""

    handler: object
    needs_session: bool = True
    needs_tree: bool = True
    # where the message holds the payload bytes the request carries, and the most response
    # data it asks for (u32 fields; 0: it names none, offset 0 being the header's)
    sent_at: int = 0
    asked_at: int = 0
    size: int = 0                 # its StructureSize (wire.REQUEST_SIZES; set by the table)
    # derived once, not per request: what _wire.check_sizes reads of it
    layout: tuple = field(init=False)

    def __post_init__(self):
        object.__setattr__(self, "layout", (self.size, self.sent_at, self.asked_at))
        if self.needs_tree and not self.needs_session:
            # (the connection looks up a request's tree connect in the session it checked)
            raise ValueError("a command that needs a tree connect needs a session")


_COMMANDS = {
    wire.NEGOTIATE: Command(h_negotiate, needs_session=False, needs_tree=False),
    wire.SESSION_SETUP: Command(h_session_setup, needs_session=False, needs_tree=False),
    wire.LOGOFF: Command(h_logoff, needs_tree=False),
    wire.TREE_CONNECT: Command(h_tree_connect, needs_tree=False),
    wire.TREE_DISCONNECT: Command(h_tree_disconnect),
    wire.CREATE: Command(h_create),
    wire.CLOSE: Command(h_close),
    wire.FLUSH: Command(h_flush),
    wire.READ: Command(h_read, asked_at=68),
    wire.WRITE: Command(h_write, sent_at=68),
    wire.LOCK: Command(h_lock),
    wire.IOCTL: Command(h_ioctl, sent_at=92, asked_at=108),
    wire.ECHO: Command(h_echo, needs_session=False, needs_tree=False),
    wire.QUERY_DIRECTORY: Command(h_query_directory, asked_at=92),
    wire.CHANGE_NOTIFY: Command(h_change_notify, asked_at=68),
    wire.QUERY_INFO: Command(h_query_info, sent_at=76, asked_at=68),
    wire.SET_INFO: Command(h_set_info, sent_at=68),
    wire.OPLOCK_BREAK: Command(h_oplock_break),
}
# each entry with its command's StructureSize, looked up with it rather than after it
COMMANDS = {command: dataclasses.replace(entry, size=wire.REQUEST_SIZES[command])
            for command, entry in _COMMANDS.items()}
