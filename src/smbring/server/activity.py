"""What srvsvc's administrators' calls see and do (Windows' Computer Management, "Shared
Folders"; rpcclient's netsessenum, netfileenum, netconnenum, netsessdel, netfileclose): this
process's sessions, tree connects and open files, listed (NetrSessionEnum,
NetrConnectionEnum, NetrFileEnum); an open file closed (NetrFileClose); sessions ended
(NetrSessionDel).

With several workers a call is answered for all of them: the worker that takes it asks the
others through their control sockets (`activity`, `close-file ID`, `end-sessions ...`,
answered by server.control as root's or the server's requests only), each within
PEER_TIMEOUT (a worker that does not answer is left out, and said so in the log); an open
file's id carries its worker's number, so that a NetrFileClose reaches the worker holding
it. Without the control socket (`control socket = none`) each worker sees and acts on the
clients it serves alone."""
from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from typing import TYPE_CHECKING, Callable

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
PEER_TIMEOUT = 2.0              # seconds another worker has to answer
PEER_ANSWER_MAX = 32 << 20      # bytes of one worker's answer (its sessions and open files)
LOCAL_ID_BITS = 22              # an open file's id: its worker's number, then this many bits


class ServerAdministration:
    """rpc.services.Administration over this process's connections."""

    def __init__(self, server: "Server") -> None:
        self._server = server
        # the ids the lists gave open files, by (client, FileId): a FileId's volatile half is
        # only its connection's, so two clients' files may share one; pruned to the opens
        # listed last
        self._ids: dict[tuple[int, bytes], int] = {}
        self._next_id = 1
        # this worker's control socket (service.py): the others' are beside it
        self.control_path: str | None = None
        self._asking: set[asyncio.Task] = set()

    @property
    def _slot(self) -> int:
        """This worker's number (0: the server is one process)."""
        worker = self._server.worker
        return worker.worker if worker is not None else 0

    def _id_of(self, conn, o: Open) -> int:
        key = (id(conn.client), o.fid)
        given = self._ids.get(key)
        if given is None:
            given = self._ids[key] = self._slot << LOCAL_ID_BITS | self._next_id
            self._next_id = self._next_id % ((1 << LOCAL_ID_BITS) - 1) + 1
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

    # -- over every worker ---------------------------------------------------------------------
    def activity_everywhere(self, done: Callable[[Activity], None]) -> bool | None:
        def then(answers: list) -> None:
            theirs = [activity_of(a) for a in answers]
            done(merged([self.activity()] + [a for a in theirs if a is not None]))
        return self._everywhere(self._peers(), "activity", then)

    def close_file_everywhere(self, file_id: int, done: Callable[[bool], None]) -> bool | None:
        slot = file_id >> LOCAL_ID_BITS
        holder = [(worker, path) for worker, path in self._peers() if worker == slot and slot != self._slot]
        # (none: this worker's, or no worker's: closed, or not found, here)
        return self._everywhere(holder, f"close-file {file_id}",
                                lambda answers: done(any(a.get("closed") is True for a in answers)))

    def end_sessions_everywhere(self, client: str | None, user: str | None, spare: object,
                                done: Callable[[int], None]) -> bool | None:
        peers = self._peers()
        if not peers:
            return None
        ended_here = self.end_sessions(client, user, spare)
        request = "end-sessions " + json.dumps({"client": client, "user": user})
        return self._everywhere(peers, request, lambda answers: done(ended_here + sum(
            a["ended"] for a in answers if isinstance(a.get("ended"), int))))

    def _peers(self) -> list[tuple[int, str]]:
        """The other workers and their control sockets (none: one process, or no socket)."""
        handoffs = self._server.handoffs
        if self.control_path is None or handoffs is None or not self._slot:
            return []
        from smbring.server.workers import peer_control_path
        return [(worker, peer_control_path(self.control_path, worker)) for worker in handoffs.others()]

    def _everywhere(self, peers: list[tuple[int, str]], request: str, then: Callable[[list], None]):
        """Asks the workers `peers` (`_peers`' (worker, control socket)) `request`; then(their
        answers, those that came within PEER_TIMEOUT). None where `peers` is empty."""
        if not peers:
            return None

        async def ask_all() -> list:
            answers = await asyncio.gather(*(_ask_peer(worker, path, request) for worker, path in peers))
            return [a for a in answers if isinstance(a, dict)]
        task = asyncio.ensure_future(self._server.server_work(ask_all()))
        self._asking.add(task)

        def answered(t: asyncio.Task) -> None:
            self._asking.discard(t)
            then([] if t.cancelled() or t.exception() is not None else t.result())
        task.add_done_callback(answered)
        return True

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


async def _ask_peer(worker: int, path: str, request: str) -> dict | None:
    """Another worker's answer to a control request; None (logged) where it gave none in time."""
    writer = None
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(path, limit=PEER_ANSWER_MAX),
                                                PEER_TIMEOUT)
        writer.write(request.encode() + b"\n")
        answer = json.loads(await asyncio.wait_for(reader.readline(), PEER_TIMEOUT))
        return answer if isinstance(answer, dict) and "error" not in answer else None
    except (OSError, ValueError, asyncio.TimeoutError, asyncio.LimitOverrunError) as e:
        log.warning("worker %d did not answer %r: %s (left out)", worker, request.split(" ")[0],
                    e or type(e).__name__)
        return None
    finally:
        if writer is not None:
            writer.close()


def activity_record(activity: Activity) -> dict:
    """An Activity as a control socket answers it (its trees name their sessions by index)."""
    index = {id(s): n for n, s in enumerate(activity.sessions)}
    return {"sessions": [dataclasses.asdict(s) for s in activity.sessions],
            "trees": [{"session": index[id(t.session)], "share": t.share, "is_ipc": t.is_ipc, "opens": t.opens}
                      for t in activity.trees if id(t.session) in index],
            "files": [dataclasses.asdict(f) for f in activity.files]}


def activity_of(record: dict) -> Activity | None:
    """The Activity another worker's answer describes; None where it is not one."""
    try:
        sessions = [SessionSeen(**s) for s in record["sessions"]]
        trees = [TreeSeen(id=0, session=sessions[t["session"]], share=t["share"], is_ipc=t["is_ipc"],
                          opens=t["opens"]) for t in record["trees"]]
        files = [FileSeen(**f) for f in record["files"]]
    except (KeyError, TypeError, IndexError):
        return None
    return Activity(tuple(sessions), tuple(trees), tuple(files))


def merged(activities: list[Activity]) -> Activity:
    """Several workers' activities as one (the tree connects numbered again: unique in it)."""
    trees = [dataclasses.replace(t, id=n) for n, t in
             enumerate((t for a in activities for t in a.trees), start=1)]
    return Activity(tuple(s for a in activities for s in a.sessions), tuple(trees),
                    tuple(f for a in activities for f in a.files))
