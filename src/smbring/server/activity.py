"""What the server holds now, as srvsvc's administrators' calls list it (NetrSessionEnum,
NetrConnectionEnum, NetrFileEnum: Windows' Computer Management, "Shared Folders"): this
process's sessions, tree connects and open files. With several workers each lists its own
(docs/ADMIN.md). Read only; `smbring status` gives the same, from every worker."""
from __future__ import annotations

import struct
import time
from typing import TYPE_CHECKING

from smbring.smb import wire
from smbring.smb.rpc.services import Activity, FileSeen, SessionSeen, TreeSeen
from smbring.smb.state import Open

if TYPE_CHECKING:
    from smbring.server.server import Server

DIALECT_NAMES = {wire.SMB202: "SMB 2.0.2", wire.SMB210: "SMB 2.1", wire.SMB300: "SMB 3.0",
                 wire.SMB302: "SMB 3.0.2", wire.SMB311: "SMB 3.1.1"}
READS = wire.FILE_READ_DATA
WRITES = wire.FILE_WRITE_DATA | wire.FILE_APPEND_DATA


def activity_of(server: "Server") -> Activity:
    now, monotonic = time.time(), time.monotonic()
    sessions, trees, files = [], [], []
    listed = set()          # the clients listed: a client's channels share its sessions and opens
    for link in sorted(server.links, key=lambda lk: lk.connected_at):
        conn = link.conn
        if id(conn.client) in listed:
            continue
        listed.add(id(conn.client))
        client = str((link.peer or ("?",))[0])
        opens_by_tree: dict[tuple[int, int], int] = {}
        for o in conn.opens.values():
            opens_by_tree[o.session_id, o.tree_id] = opens_by_tree.get((o.session_id, o.tree_id), 0) + 1
        seen: dict[int, SessionSeen] = {}
        for s in conn.sessions.values():
            if not s.valid:
                continue
            seen[s.id] = session = SessionSeen(
                client=client, user=s.user.rpartition("\\")[2], guest=s.guest, encrypted=s.encrypt,
                seconds=max(int(now - link.connected_at), 0), idle=max(int(monotonic - link.last_frame), 0),
                opens=sum(n for (sid, _tid), n in opens_by_tree.items() if sid == s.id),
                dialect=DIALECT_NAMES.get(conn.dialect, "SMB 2"))
            sessions.append(session)
            for tid, t in s.trees.items():
                trees.append(TreeSeen(id=len(trees) + 1, session=session,
                                      share=t.share.name if t.share is not None else "IPC$",
                                      is_ipc=t.share is None, opens=opens_by_tree.get((s.id, tid), 0)))
        for o in conn.opens.values():
            if not isinstance(o, Open) or o.session_id not in seen or o.tree is None or o.tree.fs is None:
                continue        # (a pipe, or an open of a session not logged on)
            name = o.display_name()
            path = "C:" + o.tree.fs.root.replace("/", "\\") + ("\\" + name if name else "")
            files.append(FileSeen(id=struct.unpack_from("<Q", o.fid, 8)[0] & 0xFFFFFFFF, path=path,
                                  user=seen[o.session_id].user, readable=bool(o.granted & READS),
                                  writable=bool(o.granted & WRITES),
                                  locks=len(server.state.locks.held(o.key, id(o)))))
    return Activity(tuple(sessions), tuple(trees), tuple(files))
