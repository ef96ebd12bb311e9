"""What srvsvc's administrators' calls see and do (Windows' Computer Management, "Shared
Folders"; rpcclient's netsessenum, netfileenum, netconnenum, netsessdel, netfileclose): this
process's sessions, tree connects and open files, listed (NetrSessionEnum,
NetrConnectionEnum, NetrFileEnum); an open file closed (NetrFileClose); sessions ended
(NetrSessionDel). With several workers each sees and acts on the clients it serves
(docs/SERVER.md); `smbring status` lists every worker's."""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from smbring.smb import wire
from smbring.smb.rpc.services import Activity, FileSeen, SessionSeen, TreeSeen, listed_path
from smbring.smb.state import Open

if TYPE_CHECKING:
    from smbring.server.server import Server

log = logging.getLogger("smbring.server")

DIALECT_NAMES = {wire.SMB202: "SMB 2.0.2", wire.SMB210: "SMB 2.1", wire.SMB300: "SMB 3.0",
                 wire.SMB302: "SMB 3.0.2", wire.SMB311: "SMB 3.1.1"}
READS = wire.FILE_READ_DATA
WRITES = wire.FILE_WRITE_DATA | wire.FILE_APPEND_DATA


class ServerAdministration:
    """rpc.services.Administration over this process's connections."""

    def __init__(self, server: "Server") -> None:
        self._server = server
        # the ids the lists gave open files, by (client, FileId): a FileId's volatile half is
        # only its connection's, so two clients' files may share one; pruned to the opens
        # listed last
        self._ids: dict[tuple[int, bytes], int] = {}
        self._next_id = 1

    def _id_of(self, conn, o: Open) -> int:
        key = (id(conn.client), o.fid)
        given = self._ids.get(key)
        if given is None:
            given = self._ids[key] = self._next_id
            self._next_id = self._next_id % 0xFFFFFFFF + 1
        return given

    def _clients(self):
        """(link, connection) once per client: a client's channels share its sessions and opens."""
        listed = set()
        for link in sorted(self._server.links, key=lambda lk: lk.connected_at):
            if id(link.conn.client) not in listed:
                listed.add(id(link.conn.client))
                yield link, link.conn

    def activity(self) -> Activity:
        now, monotonic = time.time(), time.monotonic()
        sessions, trees, files = [], [], []
        ids: dict[tuple[int, bytes], int] = {}
        for link, conn in self._clients():
            client = _client(link)
            opens_by_tree: dict[tuple[int, int], int] = {}
            for o in conn.opens.values():
                opens_by_tree[o.session_id, o.tree_id] = opens_by_tree.get((o.session_id, o.tree_id), 0) + 1
            seen: dict[int, SessionSeen] = {}
            for s in conn.sessions.values():
                if not s.valid:
                    continue
                seen[s.id] = session = SessionSeen(
                    client=client, user=_user(s), guest=s.guest, encrypted=s.encrypt,
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
                path = listed_path("/".join([o.tree.fs.root] + ([name] if name else [])))
                ids[id(conn.client), o.fid] = file_id = self._id_of(conn, o)
                files.append(FileSeen(id=file_id, path=path, user=seen[o.session_id].user,
                                      readable=bool(o.granted & READS), writable=bool(o.granted & WRITES),
                                      locks=len(self._server.state.locks.held(o.key, id(o)))))
        self._ids = ids
        return Activity(tuple(sessions), tuple(trees), tuple(files))

    def close_file(self, file_id: int) -> bool:
        """Closes the open file whose FileSeen.id is `file_id`, as a CLOSE would but with no
        answer: its client's next request naming it is answered STATUS_FILE_CLOSED."""
        for link, conn in self._clients():
            for o in list(conn.opens.values()):
                if isinstance(o, Open) and self._ids.get((id(conn.client), o.fid)) == file_id:
                    log.warning("%s (session %d, from %s) closed by an administrator", o.display_name() or ".",
                                o.session_id, _client(link))
                    conn.close_open(o)
                    conn.flush_outbox()     # what the close left to do: breaks, a delete on close
                    return True
        return False

    def end_sessions(self, client: str | None, user: str | None, spare: object) -> int:
        """Ends the sessions of `client` (an address) and of `user` (either may be None: any),
        as a LOGOFF would, but `spare`; their clients log on again at their next request
        (STATUS_USER_SESSION_DELETED). How many ended."""
        ended = 0
        for link, conn in self._clients():
            if client is not None and _client(link).lower() != client.lower():
                continue
            for s in list(conn.sessions.values()):
                if s is spare or not s.valid or user is not None and _user(s).lower() != user.lower():
                    continue
                log.warning("session %d (%s from %s) ended by an administrator", s.id, s.user, _client(link))
                conn.end_session(s.id)
                ended += 1
            conn.flush_outbox()
        return ended


def _client(link) -> str:
    return str((link.peer or ("?",))[0])


def _user(session) -> str:
    """A session's user without the domain the client named."""
    return session.user.rpartition("\\")[2]
