"""Connecting: NEGOTIATE, the logon (NTLMv2 by smbring's own initiator; Kerberos through
pyspnego on request), the session's keys, the tree connect; and the namespace calls of a connected share (open, stat, listdir, mkdir, rename,
remove, rmdir).
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import struct
from collections.abc import AsyncIterator

from smbring.smb import security, wire
from smbring.smb.credits import CREDIT_SIZE
from smbring.client import messages as m
from smbring.client.buffers import ReceivePool
from smbring.client.channel import FRAME_SLACK, Channel, SessionKeys
from smbring.client.errors import (LimitExceeded, ProtocolError, SMBError, channel_lost,
                                    closing_on_lie, error_for)
from smbring.client.limits import Limits, NameRepeats
from smbring.client.logon import check_auth, logon_context, step

DEFAULT_IO_SIZE = 1024 * 1024     # bytes per READ of RemoteFile.read (and per WRITE sent from a buffer)
# bytes per READ of a download (get): most of a download's CPU in user space is per READ (the
# request, its future, the chunk's way to the file sink); 4 MiB READs took about half the
# user CPU of 1 MiB ones against smbd, with the same kernel cost (one copy from the socket)
DEFAULT_READ_SIZE = 4 * 1024 * 1024
DEFAULT_DEPTH = 8                 # READs or WRITEs in flight per transfer
# bytes per WRITE that put sends with sendfile (neither signed nor sealed): just under 2 MiB.
# A server writes each WRITE with one write(2), and a write of 2 MiB or more is taken into
# the page cache in 2 MiB folios, whose allocation can be far dearer than smaller ones (on
# virtual machines whose free memory is handed back to the host, every such folio is faulted
# in afresh there: smbd 4.17 took 0.6-0.8 CPU-s per GiB of 1 MiB WRITEs, 2.5-3.7 of 8 MiB
# ones, on the same machine). Below 2 MiB the page cache uses folios of 1 MiB at most, so
# 2 MiB - 64 KiB costs the server no more than 1 MiB does, and the client (a request and two
# answers per WRITE) half as many WRITEs
DEFAULT_WRITE_SIZE = 2 * 1024 * 1024 - 64 * 1024
LISTING_BUFFER = 64 * 1024        # OutputBufferLength of each QUERY_DIRECTORY
SINK_HOLDS = 40 * 1024 * 1024     # bytes of READ responses a download's file sink may hold
FILE_LIST_DIRECTORY = 0x1


def check_status(response, what: str) -> None:
    """A compound's answer (Client.compound) as request() would take it: a failure raises
    what request() raises for it (FileNotFoundError, PermissionError, SMBError...)."""
    if response.status != wire.STATUS_SUCCESS:
        raise error_for(response.status, what)


def _set_info(klass: int, data: bytes, what: str) -> tuple:
    """A SET_INFO of the file a compound's CREATE opens, as Client.at_once's `middle`."""
    return (wire.SET_INFO, m.set_info_request(m.NO_FILE, wire.INFO_FILE, klass, data), 0, what,
            (wire.STATUS_SUCCESS,))


def smb_path(path: str) -> str:
    """A share-relative path as SMB names it: backslashes, no leading or trailing separator."""
    if "\0" in path:
        raise ValueError("a path cannot contain NUL")
    return "\\".join(part for part in path.replace("/", "\\").split("\\") if part)


def check_listed_name(name: str) -> None:
    """A name a listing gave must be one name inside the directory listed: never a path, never
    the directory itself or its parent, never absolute."""
    if not name or name in (".", "..") or any(c in name for c in "/\\\0") or \
            (len(name) >= 2 and name[1] == ":"):
        raise ProtocolError(f"the server listed the name {name!r}, which is not a plain file "
                            f"name (a path, a parent reference or an absolute name): refused")


class Client:
    """One logged-on session and one tree connect, over one connection or several (channels
    bound to the session: see ``connect(channels=N)``). Use ``connect()``."""

    def __init__(self, channel: Channel, host: str, share: str, *, io_size: int, depth: int,
                 write_size: int = DEFAULT_WRITE_SIZE, read_size: int = DEFAULT_READ_SIZE):
        self._channels = [channel]      # the first is the one that logged on
        self.host, self.share = host, share
        self.io_size, self.depth = io_size, depth
        self.write_size = write_size    # bytes per WRITE of a sendfile upload
        self.read_size = read_size      # bytes per READ of a download
        self.dialect = 0
        self.keys = SessionKeys()
        self.tree_id = 0
        self.guest = False
        self.auth = "ntlm"              # the logon mechanism (logon.AUTH_MECHANISMS), for bindings too
        self.guid = os.urandom(16)      # the ClientGuid: the same on every channel
        self.port = 0
        self.multichannel_note = ""     # why fewer channels than asked were bound, if so
        self.retried = 0                # READs and WRITEs sent again after their channel was lost
        self.reopened = 0               # lost channels opened and bound again
        self.rebinder = None            # multichannel.Rebinder, once channels are bound
        self._reopening: set[asyncio.Task] = set()
        self._closing = False
        self.pool: ReceivePool | None = None   # the channels' buffers for READ responses
        # READ data of responses neither signed nor sealed goes socket -> pipe -> file in
        # get (False: through the receive buffers, as signed and sealed data always does)
        self.splice = True
        # get writes page-aligned READ data with O_DIRECT (no page cache copy; where the file
        # system allows it); False: through the page cache (then splice applies)
        self.direct = True
        self.direct_bytes = 0           # bytes get wrote with O_DIRECT (diagnostics)
        self.limits = Limits()          # how much the server's listings may make it do
        self.renewals = 0               # logons again after the server said the session expired
        self._renewing: asyncio.Lock | None = None
        # (user, password, domain) of a Kerberos logon, for a renewal: what a multichannel
        # binding holds too (the ticket itself is taken from the credential cache afresh).
        # None for NTLM, whose sessions do not expire: an answer saying one did is not taken
        # as a reason to send the credentials again (someone on the path of an unsigned
        # session could say it, to have a logon to relay)
        self._credentials: tuple[str, str, str] | None = None

    # ---- lifecycle ----

    async def __aenter__(self) -> "Client":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        """Disconnects the tree and logs off (best effort), then closes every connection."""
        self._closing = True
        for task in self._reopening:
            task.cancel()
        await asyncio.gather(*self._reopening, return_exceptions=True)
        channel = self._open_channel()
        if channel is not None:
            try:
                if self.tree_id:
                    await self.request(wire.TREE_DISCONNECT, struct.pack("<HH", 4, 0))
                await channel.request(wire.LOGOFF, struct.pack("<HH", 4, 0), keys=channel.keys)
            except (OSError, ConnectionError):
                pass
        for channel in self._channels:
            await channel.close()

    @property
    def connected(self) -> bool:
        return self._open_channel() is not None

    @property
    def channels(self) -> list[Channel]:
        """The connections of this session (the first logged on; a closed one stays listed
        until it is reopened, which takes its place)."""
        return list(self._channels)

    @property
    def open_channels(self) -> int:
        return sum(1 for c in self._channels if not c.closed)

    async def renew_session(self, seen: int) -> bool:
        """Logs the session on again after the server answered STATUS_NETWORK_SESSION_EXPIRED
        (its Kerberos ticket ended), as MS-SMB2 has a client do before it sends the request
        again: a SESSION_SETUP of this session with the logon's credentials (Kerberos: a
        ticket from the credential cache, renewed there meanwhile), protected as the
        session's requests are; the session keeps its keys, tree connect and opens. `seen`:
        `renewals` when the refused request went out; where the session was renewed since
        (another request's refusal), nothing more is done. True where the session is renewed
        (the caller sends again); False where it cannot be: only a Kerberos session is, for
        NTLM sessions do not expire (the caller fails with the answer it had, and no logon
        goes out). A refused renewal raises what the logon raises (the operation fails) and
        closes the connections (the session is over)."""
        if self._credentials is None or self.guest:
            return False
        if self._renewing is None:
            self._renewing = asyncio.Lock()
        async with self._renewing:
            if self.renewals != seen:
                return True
            channel = self._open_channel() or self._channels[0]
            try:
                await _reauthenticate(channel, self, *self._credentials)
            except BaseException:
                for c in self._channels:
                    await c.close()
                raise
            self.renewals += 1
            return True

    def _adopt(self, channel: Channel) -> None:
        """What every channel of the session shares: the receive buffers, the largest frame
        accepted (a READ of read_size goes on whichever channel is least busy), and the logon
        again where the session expires."""
        channel.renewer = self
        channel.pool = self.pool
        channel.frame_limit = max(channel.frame_limit, self._channels[0].frame_limit)

    def add_channel(self, channel: Channel) -> None:
        """A connection bound to this session (its keys set): transfers use it from now on."""
        self._adopt(channel)
        self._channels.append(channel)
        for c in self._channels:
            c.on_lost = self._channel_lost

    def _channel_lost(self, channel: Channel) -> None:
        """A channel closed: when its connection was lost (not refused as broken, not closed
        by us) and channels can be bound, it is opened and bound again in the background."""
        if self._closing or self.rebinder is None or not channel_lost(channel.error):
            return
        task = asyncio.ensure_future(self._reopen(channel))
        self._reopening.add(task)
        task.add_done_callback(self._reopening.discard)

    async def _reopen(self, lost: Channel) -> None:
        pause, error = self.rebinder.pause, None
        for _attempt in range(self.rebinder.attempts):
            await asyncio.sleep(pause)
            pause *= 2
            try:
                channel = await self.rebinder.bind(lost.address)
            except ProtocolError as e:
                self.multichannel_note = f"a lost channel was not reopened: {e}"
                return          # someone in between is suspected: bind nothing more
            except Exception as e:   # refused, unreachable, silent: again after a longer pause
                error = e
                continue
            if self._closing:
                await channel.close()
                return
            self._adopt(channel)
            channel.on_lost = self._channel_lost
            self._channels[self._channels.index(lost)] = channel
            self.reopened += 1
            return
        self.multichannel_note = (f"a lost channel was not reopened after "
                                  f"{self.rebinder.attempts} attempts: {error}")

    async def wait_reopened(self) -> None:
        """Returns once no lost channel is being reopened (each reopened or given up)."""
        while self._reopening:
            await asyncio.gather(*list(self._reopening), return_exceptions=True)

    @property
    def signing(self) -> bool:
        return self.keys.sign

    @property
    def encrypting(self) -> bool:
        return self.keys.encrypt

    @property
    def peak_in_flight(self) -> int:
        """The most credits the first connection ever had in flight at once."""
        return self._channels[0].peak_in_flight

    @property
    def transfer_depth(self) -> int:
        """READs or WRITEs a transfer keeps in flight: `depth` per open channel."""
        return self.depth * max(1, self.open_channels)

    @property
    def write_depth(self) -> int:
        """WRITEs of `write_size` an upload keeps in flight: as many bytes per open channel as
        `depth` x `io_size`, and never fewer than 2 per channel (one is on the wire while the
        server writes the other)."""
        per_channel = max(2, -(-self.depth * self.io_size // self.write_size))
        return per_channel * max(1, self.open_channels)

    @property
    def read_depth(self) -> int:
        """READs of `read_size` a download keeps in flight: `depth` per open channel when they
        are io_size READs, else twice the bytes of `depth` x `io_size` (the server reads the
        next while one is on the wire and one is being received), never fewer than 2."""
        if self.read_size <= self.io_size:
            return self.transfer_depth
        per_channel = max(2, -(-2 * self.depth * self.io_size // self.read_size))
        return per_channel * max(1, self.open_channels)

    def fitting(self, size: int) -> int:
        """The bytes of the next large READ or WRITE of a transfer that asks for `size`
        (read_size, write_size): no more than half the credit window the server has opened on
        each channel, so that two fit at once (a server that grants 40 credits never lets an
        8 MiB WRITE, 128 credits, through); never less than io_size (what every transfer needs
        anyway)."""
        channels = self._channels
        if len(channels) == 1:          # the usual case, once per WRITE of an upload: no genexpr
            room = 0 if channels[0].closed else channels[0].credits_held
        else:
            room = min((c.credits_held for c in channels if not c.closed), default=0)
        fits = room // 2 * 65536 if self._channels[0].multi_credit else size
        return min(size, max(self.io_size, fits))

    fitting_write = fitting

    def refuse(self, error: ProtocolError) -> None:
        """A lie found in an answer after its channel delivered it (by a parser, a transfer's
        checks): every connection of the session is closed with it. One the channel refused
        itself has closed that channel already (a lost one, a timeout, is no lie), and the
        other channels stay, as they do then. A limit reached is no lie (LimitExceeded): the
        connections stay."""
        if channel_lost(error) or isinstance(error, LimitExceeded) or \
                any(c.error is error for c in self._channels):
            return
        for channel in self._channels:
            channel.refuse(error)

    def _open_channel(self) -> Channel | None:
        return next((c for c in self._channels if not c.closed), None)

    async def request(self, command: int, body: bytes, **kw):
        """A request on this session and tree, on the first channel still open (see
        Channel.request). Not sent again if that channel fails: not every request may be
        repeated (a CREATE that made its file would fail the second time)."""
        channel = self._open_channel() or self._channels[0]
        return await channel.request(command, body, keys=channel.keys, tree_id=self.tree_id, **kw)

    async def compound(self, parts) -> list:
        """Related requests in one frame on the first channel still open (Channel.compound):
        (command, body, payload) each, the second and later acting on the file the first
        opens. Their Responses, statuses unchecked. Not sent again if that channel fails."""
        for again in (False, True):     # (again after a renewal of the session, as request())
            renewals = self.renewals
            channel = self._open_channel() or self._channels[0]
            answers = await channel.compound(parts, keys=channel.keys, tree_id=self.tree_id)
            if answers is None:
                return await self._one_by_one(channel, parts)
            if again or answers[0].status != wire.STATUS_NETWORK_SESSION_EXPIRED or \
                    not await self.renew_session(renewals):
                return answers

    async def _one_by_one(self, channel: Channel, parts) -> list:
        """compound()'s requests sent one at a time, where the server's window will not hold
        the credits of all at once: each later one naming the file the CREATE opened; after a
        failed CREATE, none is sent and each answer is its failure (as a server answers a
        chain after its CREATE failed)."""
        (command, body, payload), *after = parts
        answers = [await channel.request(command, body, keys=channel.keys, tree_id=self.tree_id,
                                         payload=payload, expect=None)]
        if answers[0].status != wire.STATUS_SUCCESS:
            return answers * len(parts)
        file_id = m.parse_create(answers[0].message).file_id
        for command, body, payload in after:
            answers.append(await channel.request(command, m.naming_file(command, body, file_id),
                                                 keys=channel.keys, tree_id=self.tree_id,
                                                 payload=payload, expect=None))
        return answers

    async def data_request(self, command: int, body: bytes, **kw):
        """A READ or WRITE (which may be repeated: same bytes, same offset) on the channel with
        the fewest requests waiting; when that channel is lost (closed, reset, silent), sent
        again on another one while any is left. A refused answer is never retried."""
        while True:
            live = [c for c in self._channels if not c.closed]
            if not live:
                return await self._channels[0].request(command, body, keys=self._channels[0].keys,
                                                       tree_id=self.tree_id, **kw)
            channel = min(live, key=lambda c: c.load)
            try:
                return await channel.request(command, body, keys=channel.keys, tree_id=self.tree_id,
                                             **kw)
            except ConnectionError as e:
                if not channel_lost(e) or not channel.closed or len(live) < 2:
                    raise
                self.retried += 1

    def start_data_request(self, command: int, body: bytes, *, expect=(wire.STATUS_SUCCESS,),
                           what: str = "", **kw):
        """data_request(), begun at once where it can be: on the channel with the fewest
        requests waiting, when it has the credits at hand, the request is sent now (no task,
        no turn of the event loop first). Returns what finish_data_request takes: the channel
        and the future its Response will settle, or no channel and a task running
        data_request."""
        channel = self._least_loaded()
        if channel is not None:
            renewals = self.renewals
            future = channel.start_request(command, body, keys=channel.keys, tree_id=self.tree_id,
                                           **kw)
            if future is not None:
                return channel, future, (command, body, expect, what, kw, renewals)
        return None, asyncio.ensure_future(
            self.data_request(command, body, expect=expect, what=what, **kw)), None

    def sole_channel(self) -> Channel | None:
        """The session's channel when it has one only and it is open (an upload's WRITEs then
        need no choosing and no retry on another channel: see files._WritePump)."""
        channels = self._channels
        return channels[0] if len(channels) == 1 and not channels[0].closed else None

    def _least_loaded(self) -> Channel | None:
        """The open channel with the fewest requests waiting; None when none is open."""
        channels = self._channels
        if len(channels) == 1:          # the usual case, once per WRITE of an upload: no choice
            return None if channels[0].closed else channels[0]
        return min((c for c in channels if not c.closed), key=lambda c: c.load, default=None)

    async def finish_data_request(self, started):
        """The Response to a request start_data_request began, its status checked as
        data_request checks it; when its channel was lost, the request goes again on the
        others (data_request), while one is open."""
        channel, future, request = started
        if channel is None:             # data_request itself, as a task
            return await future
        command, body, expect, what, kw, renewals = request
        try:
            response = await future
        except ConnectionError as e:
            if not channel_lost(e) or not channel.closed or \
                    not any(not c.closed for c in self._channels):
                raise
            self.retried += 1
            return await self.data_request(command, body, expect=expect, what=what, **kw)
        if response.status == wire.STATUS_NETWORK_SESSION_EXPIRED and await self.renew_session(renewals):
            return await self.data_request(command, body, expect=expect, what=what, **kw)    # (once more)
        if response.status not in expect:
            raise error_for(response.status, what or "request")
        return response

    def charge_for(self, size: int) -> int:
        return self._channels[0].charge_for(size)

    # ---- opens ----

    @closing_on_lie
    async def create(self, path: str, access: int, disposition: int, options: int = 0,
                     attributes: int = 0, share: int = m.FILE_SHARE_ALL) -> m.CreateResponse:
        name = smb_path(path)
        r = await self.request(wire.CREATE, m.create_request(name, access, disposition, options,
                                                             attributes, share), what=f"open {path!r}")
        return m.parse_create(r.message)

    async def close_file(self, file_id: bytes) -> None:
        await self.request(wire.CLOSE, m.close_request(file_id))

    @contextlib.asynccontextmanager
    async def opened(self, path: str, access: int, disposition: int, options: int = 0,
                     share: int = m.FILE_SHARE_ALL, *, first=None) -> AsyncIterator:
        """The file at `path` open (its CreateResponse) for an `async with` block, closed at
        its end while the connection is up. A lie found in the block (ProtocolError) closes
        the session's connections first: nothing more is asked of that server. `first`
        ((command, body, payload): a request on the file) goes in the CREATE's frame, one
        round trip for both; the block then gets (CreateResponse, its Response), the
        Response's status unchecked."""
        if first is None:
            r = given = await self.create(path, access, disposition, options, share=share)
        else:
            r, (answer,) = await self._created_with(path, access, disposition, options, share, [first])
            given = (r, answer)
        try:
            yield given
        except ProtocolError as e:
            self.refuse(e)
            raise
        finally:
            if self.connected:
                await asyncio.shield(self.close_file(r.file_id))

    def directory(self, path: str, first=None):
        """opened(): the directory at `path`, to list or watch."""
        return self.opened(path, FILE_LIST_DIRECTORY | m.FILE_READ_ATTRIBUTES | m.SYNCHRONIZE,
                           wire.FILE_OPEN, wire.FILE_DIRECTORY_FILE, first=first)

    async def open(self, path: str, mode: str = "r"):
        """The remote file as an async file object (see files.RemoteFile); modes as open()'s,
        always binary: r, w, a, x, with + for reading and writing."""
        from smbring.client.files import RemoteFile    # files builds on this module
        return await RemoteFile.open(self, path, mode)

    @closing_on_lie
    async def _created_with(self, path: str, access: int, disposition: int, options: int,
                            share: int, after: list) -> tuple:
        """A CREATE with the requests `after` it ((command, body, payload) each, on the file it
        opens) in one frame: (its CreateResponse, their Responses, statuses unchecked). The
        CREATE's failure raises as request() raises it (the server fails the others with it)."""
        created, *answers = await self.compound(
            [(wire.CREATE, m.create_request(smb_path(path), access, disposition, options, 0, share), 0),
             *after])
        check_status(created, f"open {path!r}")
        return m.parse_create(created.message), answers

    async def at_once(self, path: str, access: int, disposition: int, options: int = 0, *,
                      middle=None, close_flags: int = 0):
        """A CREATE, a request on the file it opens (`middle`: (command, body, payload, what,
        statuses taken for success), or none) and its CLOSE, sent together: one round trip
        instead of two or three. (CreateResponse, the middle's Response or None, the CLOSE's
        Response). A failure raises as request() raises it, the CREATE's first (the others
        then fail with it), then the middle's (the CLOSE is made all the same)."""
        after = ([middle[:3]] if middle is not None else []) + \
            [(wire.CLOSE, m.close_request(m.NO_FILE, close_flags), 0)]
        created, answers = await self._created_with(path, access, disposition, options,
                                                    m.FILE_SHARE_ALL, after)
        if middle is not None and answers[0].status not in middle[4]:
            raise error_for(answers[0].status, middle[3])
        check_status(answers[-1], f"close {path!r}")
        return created, answers[0] if middle is not None else None, answers[-1]

    async def stat(self, path: str) -> m.RemoteStat:
        """The file's size, attributes and times: a CREATE and its CLOSE in one round trip."""
        r, _, _ = await self.at_once(path, m.FILE_READ_ATTRIBUTES | m.SYNCHRONIZE, wire.FILE_OPEN)
        return m.RemoteStat(r.size, r.allocation, r.attributes,
                            *(wire.unix_ns(t) for t in r.times))

    async def listdir(self, path: str = "", *,
                      max_entries: int | None = None) -> AsyncIterator[m.DirEntry]:
        """The entries of a directory (not "." and ".."), as the server lists them. A name that
        is not a plain file name, "." or ".." listed twice, a listing that goes round (its names
        come again: NameRepeats) end it with ProtocolError; more than `max_entries` entries
        (default: limits.entries) with LimitExceeded. Memory: one response's batch."""
        limit = self.limits.entries if max_entries is None else max_entries
        listed = (wire.STATUS_SUCCESS, wire.STATUS_NO_MORE_FILES)
        # the first batch asked in the CREATE's frame: one round trip fewer per directory
        first = (wire.QUERY_DIRECTORY, m.query_directory_request(m.NO_FILE, "*", m.RESTART_SCANS,
                                                                 LISTING_BUFFER), LISTING_BUFFER)
        async with self.directory(path, first) as (r, resp):
            given, dots, repeats = 0, set(), NameRepeats()
            while True:
                if resp.status not in listed:
                    raise error_for(resp.status, f"list {path!r}")
                if resp.status == wire.STATUS_NO_MORE_FILES:
                    return
                # (every batch holds an entry at least: parse_directory refuses an empty one)
                for entry in m.parse_directory(m.parse_output_buffer(resp.message, LISTING_BUFFER)):
                    if entry.name in (".", "..") and entry.is_dir:
                        if entry.name in dots:
                            raise ProtocolError(f"the listing of {path!r} gave {entry.name!r} "
                                                f"twice: it goes round instead of ending")
                        dots.add(entry.name)      # the directory itself and its parent
                        continue
                    check_listed_name(entry.name)
                    # a server whose listing goes round (gives names it gave before instead
                    # of the end) would keep this loop, and whatever collects the names,
                    # going for ever; no directory lists a name twice
                    if repeats.seen(entry.name):
                        raise ProtocolError(f"the server listed the name {entry.name!r} twice "
                                            f"in {path!r}: its listing goes round instead of "
                                            f"ending, or lies")
                    given += 1
                    if given > limit:
                        raise LimitExceeded(f"the listing of {path!r} has more than {limit:,} "
                                            f"entries", "entries", limit)
                    yield entry
                resp = await self.request(
                    wire.QUERY_DIRECTORY, m.query_directory_request(r.file_id, "*", 0, LISTING_BUFFER),
                    payload=LISTING_BUFFER, expect=listed, what=f"list {path!r}")

    async def mkdir(self, path: str) -> None:
        await self.at_once(path, m.FILE_READ_ATTRIBUTES | m.SYNCHRONIZE, wire.FILE_CREATE,
                           wire.FILE_DIRECTORY_FILE)

    async def remove(self, path: str) -> None:
        await self._delete(path, wire.FILE_NON_DIRECTORY_FILE)

    async def rmdir(self, path: str) -> None:
        await self._delete(path, wire.FILE_DIRECTORY_FILE)

    async def _delete(self, path: str, kind: int) -> None:
        """Marks the file for deletion with FileDispositionInformation rather than opening it
        delete-on-close: the server checks then (a directory that is not empty answers
        STATUS_DIRECTORY_NOT_EMPTY), where a failed delete-on-close goes unreported."""
        await self.at_once(path, wire.DELETE | m.FILE_READ_ATTRIBUTES, wire.FILE_OPEN, kind,
                           middle=_set_info(m.FILE_DISPOSITION_INFORMATION, b"\x01", f"remove {path!r}"))

    async def rename(self, src: str, dst: str, replace: bool = False) -> None:
        """Renames within the share; `replace`: an existing dst is replaced (a file only)."""
        await self.at_once(src, wire.DELETE | m.FILE_READ_ATTRIBUTES | m.SYNCHRONIZE, wire.FILE_OPEN,
                           middle=_set_info(m.FILE_RENAME_INFORMATION,
                                            m.rename_information(smb_path(dst), replace),
                                            f"rename {src!r} to {dst!r}"))

    @closing_on_lie
    async def copy(self, src: str, dst: str, replace: bool = False) -> int:
        """Copies the file `src` to `dst` within the share, in the server (its data never
        crosses the network: FSCTL_SRV_COPYCHUNK_WRITE); the bytes copied. `replace`: an
        existing `dst` is overwritten (else FileExistsError). A copy that fails removes its
        destination (see client.server_copy)."""
        from smbring.client.server_copy import copy     # only for copies
        return await copy(self, src, dst, replace)

    def watch(self, path: str = "", *, recursive: bool = False, changes=None) -> AsyncIterator:
        """The changes in a directory (`recursive`: below it too) as the server reports them,
        as an async iterator of client.watch.Change (action, name), for as long as it is
        iterated; `changes`: what to report (names of client.watch.CHANGES; None: file and
        directory names, attributes, sizes and write times). Close it where you stop
        (contextlib.aclosing), as a listing: its directory stays open on the server until
        then."""
        from smbring.client.watch import watch          # only for watches
        return watch(self, path, recursive, changes)

    async def set_info(self, file_id: bytes, klass: int, data: bytes, what: str = "") -> None:
        await self.request(wire.SET_INFO, m.set_info_request(file_id, wire.INFO_FILE, klass, data),
                           what=what)

    @closing_on_lie
    async def query_info(self, file_id: bytes, klass: int, size: int) -> memoryview:
        r = await self.request(wire.QUERY_INFO, m.query_info_request(file_id, wire.INFO_FILE, klass, size))
        return m.parse_output_buffer(r.message, size)

    # ---- transfers ----

    @closing_on_lie
    async def get(self, remote: str, local: str, progress=None) -> str:
        from smbring.client.transfer import get
        return await get(self, remote, local, progress)

    @closing_on_lie
    async def put(self, local: str, remote: str, progress=None) -> str:
        """A local file, or a whole directory tree (to a name that must be new on the share)."""
        from smbring.client.transfer import put
        return await put(self, local, remote, progress)


async def connect(host: str, port: int = 445, user: str = "", password: str = "", share: str = "",
                  *, domain: str = "", sign: bool = False, encrypt: bool = False,
                  dialects=wire.DIALECTS, ciphers=security.CIPHER_PREFERENCE,
                  allow_guest: bool = False, io_size: int = DEFAULT_IO_SIZE,
                  depth: int = DEFAULT_DEPTH, timeout: float = 60.0, channels: int = 1,
                  write_size: int = DEFAULT_WRITE_SIZE, read_size: int = DEFAULT_READ_SIZE,
                  auth: str = "ntlm", limits: Limits | None = None) -> Client:
    """Connects, logs on as `user` with NTLMv2 and connects to `share`.

    auth: "ntlm" (default): NTLMv2 by smbring's own initiator (empty user and password: an
    anonymous logon); "negotiate": pyspnego's SPNEGO client, which uses Kerberos when a ticket
    can be had (then needs pyspnego with its Kerberos extra) and its NTLM otherwise;

    sign: insist on signed messages even when the server does not ask for it;
    encrypt: seal every message after the logon (refused if the server offers no cipher);
    dialects, ciphers: what is offered, in order of preference; allow_guest: accept being
    logged on as guest (else refused: the server did not accept the credentials);
    channels: connections to use (multichannel, SMB 3.x): the others are bound to the
    session, to the addresses the server lists; with fewer if the server does not offer it
    (``Client.multichannel_note`` says why);
    io_size: bytes per READ, and per WRITE sent from a buffer (signed, sealed, RemoteFile.write);
    write_size: bytes per WRITE of an upload sent with sendfile (neither signed nor sealed);
    read_size: bytes per READ of a download (get);
    all three lowered to what the server allows;
    limits: how many entries a listing, and how many files, directories and levels a get of
    a tree, may have (limits.Limits; the client's `limits` attribute).
    """
    if channels < 1:
        raise ValueError("channels must be at least 1")
    check_auth(auth)
    channel = await Channel.open(host, port, timeout=timeout)
    client = Client(channel, host, share, io_size=io_size, depth=depth, write_size=write_size,
                    read_size=read_size)
    client.port, client.auth = port, auth
    channel.renewer = client
    if limits is not None:
        client.limits = limits
    try:
        negotiated = await negotiate(channel, dialects, ciphers, sign, encrypt, client.guid,
                                     io_size, multichannel=channels > 1, write_size=write_size,
                                     read_size=read_size)
        client.dialect = negotiated.response.dialect
        client.io_size = negotiated.io_size
        client.write_size = negotiated.write_size
        client.read_size = negotiated.read_size
        # READ responses land in these: those in flight on every channel, and those the file
        # sink holds while the disk writes (FileSink.HOLDS bytes)
        in_flight = max(depth, client.read_depth)
        client.pool = channel.pool = ReceivePool(
            channel.frame_limit, in_flight * channels + -(-SINK_HOLDS // channel.frame_limit))
        await _session_setup(channel, client, negotiated, user, password, domain, sign, encrypt,
                             allow_guest)
        await _tree_connect(client, host, share)
        _sizes_within_window(client, channel)
        if client.dialect in (wire.SMB300, wire.SMB302) and not client.guest:
            await validate_negotiate(client, channel, negotiated)
        if channels > 1:
            from smbring.client.multichannel import add_channels   # it builds on this module
            await add_channels(client, negotiated, channels - 1, user, password, domain,
                               dialects, ciphers, sign, encrypt)
    except BaseException:
        for c in client.channels:
            await c.close()
        raise
    return client


def _sizes_within_window(client: Client, channel: Channel) -> None:
    """A server whose credit window, once logged on, holds fewer credits than a READ or
    WRITE of the sizes negotiated needs (one that grants a credit at a time) would never
    see one sent: they are lowered to what the window holds (64 KiB a credit)."""
    fits = max(1, channel.credits_held) * CREDIT_SIZE
    if channel.charge_for(max(client.io_size, client.read_size, client.write_size)) > channel.credits_held:
        client.io_size = min(client.io_size, fits)
        client.read_size = min(client.read_size, fits)
        client.write_size = min(client.write_size, fits)


class Negotiated:
    def __init__(self, response: m.NegotiateResponse, preauth: security.PreauthIntegrity,
                 cipher: int, signing_algorithm: int, offered: tuple, io_size: int,
                 write_size: int, read_size: int | None = None):
        self.response, self.preauth = response, preauth
        self.cipher, self.signing_algorithm = cipher, signing_algorithm
        self.offered = offered        # (capabilities, guid, security mode, dialects) sent
        self.io_size = io_size        # the READ (and buffered WRITE) size this connection allows
        self.write_size = write_size  # the sendfile WRITE size this connection allows
        self.read_size = io_size if read_size is None else read_size   # a download's READs


async def negotiate(channel: Channel, dialects, ciphers, sign: bool, encrypt: bool, guid: bytes,
                    io_size: int, multichannel: bool = False,
                    write_size: int = DEFAULT_WRITE_SIZE,
                    read_size: int = DEFAULT_READ_SIZE) -> Negotiated:
    """NEGOTIATE on a new connection; sets its credit mode and frame limit."""
    security_mode = wire.SECURITY_SIGNING_ENABLED | (wire.SECURITY_SIGNING_REQUIRED if sign else 0)
    capabilities = wire.CAP_LARGE_MTU | (wire.CAP_ENCRYPTION if ciphers else 0)
    if multichannel:
        capabilities |= wire.CAP_MULTI_CHANNEL      # Samba offers it only to who asks
    signing_algorithms = security.SIGNING_PREFERENCE
    body = m.negotiate_request(tuple(dialects), security_mode, capabilities, guid,
                               os.urandom(32), tuple(ciphers), signing_algorithms)
    r = await channel.request(wire.NEGOTIATE, body, keep_request=True)
    neg = m.parse_negotiate(r.message)
    if neg.dialect not in dialects:
        raise ProtocolError(f"the server chose dialect {neg.dialect:#x}, which was not offered")
    preauth = security.PreauthIntegrity()
    cipher, algorithm = 0, security.algorithm_for(neg.dialect)
    if neg.dialect == wire.SMB311:
        ctx = neg.contexts.get(wire.PREAUTH_INTEGRITY_CAPABILITIES)
        if ctx is None or len(ctx) < 6 or struct.unpack_from("<HH", ctx, 0)[0] != 1 or \
                struct.unpack_from("<H", ctx, 4)[0] != wire.SHA512:
            raise ProtocolError("SMB 3.1.1 without SHA-512 preauthentication integrity")
        preauth.update(r.request)
        preauth.update(r.message)
        if wire.ENCRYPTION_CAPABILITIES in neg.contexts:
            cipher = m.one_choice(neg.contexts[wire.ENCRYPTION_CAPABILITIES], "encryption")
            if cipher and cipher not in ciphers:
                raise ProtocolError(f"the server chose cipher {cipher}, which was not offered")
        if wire.SIGNING_CAPABILITIES in neg.contexts:
            algorithm = m.one_choice(neg.contexts[wire.SIGNING_CAPABILITIES], "signing")
            if algorithm not in signing_algorithms:
                raise ProtocolError(f"the server chose signing algorithm {algorithm}, which was not offered")
    elif neg.dialect >= wire.SMB300 and neg.capabilities & wire.CAP_ENCRYPTION and \
            security.AES_128_CCM in ciphers:
        cipher = security.AES_128_CCM
    if encrypt and not cipher:
        raise ProtocolError(f"encryption was asked for, but the server (dialect {neg.dialect:#x}) "
                            f"negotiated no cipher")
    channel.multi_credit = neg.dialect > wire.SMB202 and bool(neg.capabilities & wire.CAP_LARGE_MTU)
    largest = neg.max_read if neg.max_read < neg.max_write else neg.max_write
    if not channel.multi_credit:
        largest = min(largest, 65536)
    if largest < 4096:
        raise ProtocolError(f"the server allows READs and WRITEs of only {largest} bytes")
    io_size = max(4096, min(io_size, largest))
    # WRITEs only need MaxWriteSize (responses to them are small: the frame limit stays)
    write_size = max(4096, min(write_size, neg.max_write if channel.multi_credit else largest))
    # a download's READs need MaxReadSize only (and a frame that large: the frame limit grows)
    read_size = max(io_size, min(read_size, neg.max_read if channel.multi_credit else largest))
    channel.frame_limit = max(io_size, read_size, LISTING_BUFFER) + FRAME_SLACK
    return Negotiated(neg, preauth, cipher, algorithm,
                      (capabilities, guid, security_mode, tuple(dialects)), io_size, write_size,
                      read_size)


async def _session_setup(channel: Channel, client: Client, neg: Negotiated, user: str,
                         password: str, domain: str, sign: bool, encrypt: bool,
                         allow_guest: bool) -> None:
    principal = f"{domain}\\{user}" if domain else user
    context = logon_context(client.auth, user, password, domain, client.host)
    security_mode = wire.SECURITY_SIGNING_ENABLED | (wire.SECURITY_SIGNING_REQUIRED if sign else 0)
    preauth = neg.preauth.copy()
    r, flags, reply = await _logon_steps(channel, context, security_mode, 0, None,
                                         preauth if client.dialect == wire.SMB311 else None,
                                         f"logon as {principal or '(anonymous)'}")
    session_id = r.header.session_id
    # an anonymous logon proved nothing and has no key, whatever the flags say (Samba gives
    # an anonymous session neither IS_NULL nor a signature)
    anonymous = client.auth == "ntlm" and not user and not password
    if anonymous or flags & (wire.SESSION_FLAG_IS_GUEST | wire.SESSION_FLAG_IS_NULL):
        if not allow_guest:
            raise error_for(wire.STATUS_LOGON_FAILURE, "an anonymous logon: allow_guest is needed"
                            if anonymous else f"logon as {principal}: the server made it a guest "
                            f"session (credentials not accepted)")
        if sign or encrypt:
            raise ProtocolError("a guest session can be neither signed nor encrypted")
        client.guest = True
        client.keys = channel.keys = SessionKeys(session_id=session_id)
        channel.register(client.keys)
        return
    _mechanism_done(context, reply, "logon")
    if getattr(context, "negotiated_protocol", "") == "kerberos":
        client._credentials = (user, password, domain)      # (a session that can expire)
    # the whole key: signing takes its first 16 bytes, the AES-256 ciphers all of it (a
    # Kerberos AES-256 key is 32 bytes; security.cipher_keys)
    session_key = bytes(context.session_key)
    preauth_value = preauth.value if client.dialect == wire.SMB311 else None
    keys = SessionKeys(session_id=session_id, signing_algorithm=neg.signing_algorithm,
                       signing_key=security.signing_key(session_key, client.dialect, preauth_value),
                       cipher=neg.cipher)
    keys.sign = sign or bool(neg.response.security_mode & wire.SECURITY_SIGNING_REQUIRED)
    # the final SESSION_SETUP is signed in SMB 3.x (it proves the NEGOTIATE in 3.1.1)
    if r.header.flags & wire.FLAGS_SIGNED or keys.sign or client.dialect >= wire.SMB300:
        if not r.header.flags & wire.FLAGS_SIGNED or \
                not security.verify(keys.signing_algorithm, keys.signing_key, r.message):
            raise ProtocolError("bad signature on the final SESSION_SETUP response: the "
                                "server does not hold the session key, or the messages were altered")
    if neg.cipher:
        keys.decrypt_key, keys.encrypt_key = security.cipher_keys(session_key, client.dialect,
                                                                  preauth_value, neg.cipher)
        keys.encrypt = encrypt or bool(flags & wire.SESSION_FLAG_ENCRYPT_DATA)
    elif flags & wire.SESSION_FLAG_ENCRYPT_DATA:
        raise ProtocolError("the server requires encryption but negotiated no cipher")
    client.keys = channel.keys = keys
    channel.register(keys)


async def _logon_steps(channel: Channel, context, security_mode: int, session_id: int,
                       keys: SessionKeys | None, preauth: security.PreauthIntegrity | None,
                       what: str):
    """The SESSION_SETUP requests of one logon (or of a session's renewal, `keys` protecting
    them), each carrying the mechanism's next token, until the server's answer is final:
    (that Response, its session flags, its security token). `preauth`: the 3.1.1 hash, fed
    each request and each answer that asks for more."""
    token = step(context)
    while True:
        r = await channel.request(
            wire.SESSION_SETUP, m.session_setup_request(security_mode, token), session_id=session_id,
            keys=keys, sign=keys is not None, expect=(wire.STATUS_SUCCESS, wire.STATUS_MORE_PROCESSING_REQUIRED),
            keep_request=True, what=what)
        if preauth is not None:
            preauth.update(r.request)
        if session_id and r.header.session_id != session_id:
            raise ProtocolError("the server changed the session id during the logon")
        session_id = r.header.session_id
        flags, reply = m.parse_session_setup(r.message)
        if r.status != wire.STATUS_MORE_PROCESSING_REQUIRED:
            return r, flags, reply
        if preauth is not None:
            preauth.update(r.message)
        token = step(context, reply)
        if not token:
            raise ProtocolError("the logon needs another step but the mechanism has nothing to send")


async def _reauthenticate(channel: Channel, client: Client, user: str, password: str,
                          domain: str) -> None:
    """A logon again of the client's session on `channel` (Client.renew_session), signed (or
    sealed) with the channel's keys, which it leaves as they are (MS-SMB2: a
    re-authentication derives no keys); its final answer must be signed or sealed with them."""
    principal = f"{domain}\\{user}" if domain else user
    context = logon_context(client.auth, user, password, domain, client.host)
    keys = channel.keys
    security_mode = wire.SECURITY_SIGNING_ENABLED | (wire.SECURITY_SIGNING_REQUIRED if keys.sign else 0)
    r, flags, reply = await _logon_steps(channel, context, security_mode, keys.session_id, keys, None,
                                         f"renewed logon as {principal or '(anonymous)'}")
    if flags & (wire.SESSION_FLAG_IS_GUEST | wire.SESSION_FLAG_IS_NULL):
        raise error_for(wire.STATUS_LOGON_FAILURE, f"renewed logon as {principal}: the server made it "
                        f"a guest session (credentials not accepted)")
    _mechanism_done(context, reply, "renewed logon")


def _mechanism_done(context, reply: bytes, what: str) -> None:
    """The server's last token, where it sent one, to the mechanism (which checks the
    server's mechListMIC, or its AP-REP): the logon is over only once the mechanism says so."""
    if reply:
        step(context, reply)
    if not context.complete:
        raise ProtocolError(f"the server accepted the {what} before the mechanism completed")


async def _tree_connect(client: Client, host: str, share: str) -> None:
    # a 3.1.1 TREE_CONNECT is signed whatever the session's signing (MS-SMB2 3.2.4.2.4): the
    # answer then proves that the server holds the key
    r = await client.request(wire.TREE_CONNECT, m.tree_connect_request(f"\\\\{host}\\{share}"),
                             what=f"connect to share {share!r}", sign=client.dialect == wire.SMB311)
    _share_type, flags = m.parse_tree_connect(r.message)
    client.tree_id = r.header.tree_id
    if flags & m.SHAREFLAG_ENCRYPT_DATA and not client.keys.encrypt:
        if not client.keys.cipher:
            raise ProtocolError(f"share {share!r} requires encryption, and no cipher was negotiated")
        client.keys.encrypt = True   # every later message of the session is sealed


async def validate_negotiate(client: Client, channel: Channel, neg: Negotiated) -> None:
    """FSCTL_VALIDATE_NEGOTIATE_INFO (MS-SMB2 3.2.5.14.12): on SMB 3.0 and 3.0.2, which have no
    preauthentication hash, the server repeats under the session's signature what it answered
    to NEGOTIATE and checks what we offered; a difference means that someone in between
    changed the NEGOTIATE (a downgrade). 3.1.1's signed SESSION_SETUP covers it already."""
    try:
        r = await channel.request(wire.IOCTL, m.validate_negotiate_request(*neg.offered), sign=True,
                                  keys=channel.keys, tree_id=client.tree_id,
                                  what="VALIDATE_NEGOTIATE_INFO")
    except SMBError as e:
        raise ProtocolError(f"the server refused VALIDATE_NEGOTIATE_INFO ({e}): the "
                            f"negotiation cannot be trusted") from None
    said = m.parse_validate_negotiate(r.message)
    sent = (neg.response.capabilities, neg.response.server_guid, neg.response.security_mode,
            neg.response.dialect)
    if tuple(said) != sent:
        raise ProtocolError("VALIDATE_NEGOTIATE_INFO does not match the NEGOTIATE response: "
                            "the negotiation was altered in transit")
