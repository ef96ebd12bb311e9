"""What one client may make the server hold: every bound in one place, each with its default
and the smb.conf option that sets it (Samba's name where Samba has the option).

The protocol core enforces the per-connection bounds (credits, sessions, trees, opens, locks,
compounds, frame sizes); the server enforces the per-address and total connection bounds and
the timeouts. docs/SECURITY.md lists them with what a client sees when it reaches one.
"""
from __future__ import annotations

from dataclasses import dataclass

MAX_IO = 8 << 20        # MaxRead/Write/TransactSize announced in NEGOTIATE
MAX_IO_SMB202 = 65536   # SMB 2.0.2 has no multi-credit requests: 64 KiB at most (MS-SMB2 3.3.5.4)


@dataclass
class Limits:
    # credits (MS-SMB2 3.3.1.2): the most a client may hold, i.e. the MessageId window
    max_credits: int = 8192                  # smb2 max credits
    # per connection
    max_sessions: int = 64                   # max sessions per connection
    max_pending_sessions: int = 8            # max pending sessions (logons not yet complete)
    max_open_files: int = 16384              # max open files (per connection, as one smbd)
    max_open_pipes: int = 64                 # max open pipes (srvsvc, wkssvc; among the files)
    max_pending_requests: int = 1024         # max pending requests (blocking locks, notifies)
    # per session
    max_trees: int = 256                     # max trees per session
    max_channels: int = 32                   # max channels per session (connections bound to it)
    # per open
    max_locks: int = 4096                    # max locks per open
    max_locks_per_connection: int = 65536    # max locks per connection (all its opens)
    # per user (its connections and sessions together; a guest's and anonymous' share one):
    # about 300 bytes each, so 128 connections of one user at the per-connection bound held
    # 2.6 GB
    max_locks_per_user: int = 262144         # max locks per user
    # each open holds a descriptor of the one process all users share (with a LimitNOFILE of
    # 65536, four connections of one user at `max open files` took them all; all users' opens
    # together stop short of the limit: ServerState.max_opens)
    max_open_files_per_user: int = 16384     # max open files per user
    # the names QUERY_DIRECTORY keeps for handles that scanned a directory (some 70 bytes
    # each): past it, the user's least recently used listings are dropped, and listed again
    # from where they were when next asked (smb.listings)
    max_listed_names_per_user: int = 1000000  # max listed names per user
    # per request: MaxReadSize, MaxWriteSize, MaxTransactSize announced in NEGOTIATE (SMB 2.1
    # and later; 2.0.2's are 64 KiB), each 64 KiB to 8 MiB: larger READs, WRITEs and other
    # requests' buffers (IOCTL, QUERY_INFO, SET_INFO, QUERY_DIRECTORY, CHANGE_NOTIFY) are
    # STATUS_INVALID_PARAMETER, as smbd answers
    max_read: int = MAX_IO                   # smb2 max read
    max_write: int = MAX_IO                  # smb2 max write
    max_trans: int = MAX_IO                  # smb2 max trans
    # per frame
    max_compound: int = 128                  # max compound requests (elements in one frame)
    max_frame: int = MAX_IO + 65536          # a frame once a session is established
    max_frame_unauthenticated: int = 65536   # before: NEGOTIATE and SESSION_SETUP only
    # per server, in the protocol core: durable opens whose session is gone, kept for a
    # reconnect (each holds a descriptor, a share mode and locks): past this, the oldest is closed
    max_disconnected_durable: int = 1024     # max disconnected durable handles (smbring's)
    # per server (enforced by the server, not the protocol core)
    max_connections: int = 1024              # max smbd processes (Samba: one per connection)
    max_connections_per_address: int = 128   # max connections per client
    max_frame_memory: int = 512              # max frame memory: MiB of large frames arriving (0: none)
    handshake_timeout: float = 60.0          # seconds to log on before the connection is dropped
    deadtime: float = 10080.0                # deadtime: minutes idle with no open file (0: never)


# smb.conf option -> Limits field; the server's configuration reader takes these names
OPTIONS = {
    "smb2 max credits": "max_credits",
    "smb2 max read": "max_read",
    "smb2 max write": "max_write",
    "smb2 max trans": "max_trans",
    "max sessions per connection": "max_sessions",
    "max pending sessions": "max_pending_sessions",
    "max open files": "max_open_files",
    "max open pipes": "max_open_pipes",
    "max pending requests": "max_pending_requests",
    "max trees per session": "max_trees",
    "max channels per session": "max_channels",
    "max locks per open": "max_locks",
    "max locks per connection": "max_locks_per_connection",
    "max locks per user": "max_locks_per_user",
    "max open files per user": "max_open_files_per_user",
    "max listed names per user": "max_listed_names_per_user",
    "max compound requests": "max_compound",
    "max smbd processes": "max_connections",
    "max connections per client": "max_connections_per_address",
    "max frame memory": "max_frame_memory",
    "handshake timeout": "handshake_timeout",
    "max disconnected durable handles": "max_disconnected_durable",
    "deadtime": "deadtime",
}
