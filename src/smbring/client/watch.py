"""Change notify (MS-SMB2 3.2.4.13, MS-FSCC 2.7.1): what changes in a directory, as the server
reports it. One CHANGE_NOTIFY request waits on the server at a time (the server says at once
that it will answer later: STATUS_PENDING, after which the request has no deadline); its
answer's changes are given one by one, then the next request goes out. The server keeps what
changes between two requests (up to the first request's buffer, as Windows and Samba do);
when more changed than it kept, it answers STATUS_NOTIFY_ENUM_DIR, given as a change of kind
"overflow": the directory has to be listed again.

Names are as the server gives them, relative to the watched directory (with `/` between the
components of a name below it, `recursive=True`); one that is not such a path (empty, absolute,
with a `.` or `..` component) is a lie: ProtocolError, the connections closed.
"""
from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from smbring.smb import notify, wire
from smbring.client import messages as m
from smbring.client.errors import ProtocolError

NOTIFY_BUFFER = 64 * 1024       # OutputBufferLength of each CHANGE_NOTIFY

ACTIONS = {notify.ADDED: "added", notify.REMOVED: "removed", notify.MODIFIED: "modified",
           notify.RENAMED_OLD_NAME: "renamed_from", notify.RENAMED_NEW_NAME: "renamed_to",
           notify.ADDED_STREAM: "added_stream", notify.REMOVED_STREAM: "removed_stream",
           notify.MODIFIED_STREAM: "modified_stream"}

# what `changes` may name (MS-FSCC 2.7.1's completion filter)
CHANGES = {"file_name": notify.FILE_NAME, "dir_name": notify.DIR_NAME, "attributes": notify.ATTRIBUTES,
           "size": notify.SIZE, "last_write": notify.LAST_WRITE, "last_access": notify.LAST_ACCESS,
           "creation": notify.CREATION, "ea": notify.EA, "security": notify.SECURITY,
           "stream_name": notify.STREAM_NAME, "stream_size": notify.STREAM_SIZE,
           "stream_write": notify.STREAM_WRITE}
DEFAULT_CHANGES = ("file_name", "dir_name", "attributes", "size", "last_write")
# the server's answers that end a watch: its handle was closed, its directory is being deleted
ENDS = (wire.STATUS_NOTIFY_CLEANUP, wire.STATUS_DELETE_PENDING)


@dataclass(frozen=True)
class Change:
    """One change: `action` one of ACTIONS' names (added, removed, modified, renamed_from,
    renamed_to, added_stream, removed_stream, modified_stream, or "action-N" for one this
    client does not know), or "overflow" (more changed than the server kept: list again;
    `name` is then empty); `name` relative to the watched directory (a stream's change:
    "file:stream")."""
    action: str
    name: str


def completion_filter(changes) -> int:
    """The completion filter of `changes` (names of CHANGES); ValueError for another name."""
    bits = 0
    for name in changes:
        if name not in CHANGES:
            raise ValueError(f"unknown change {name!r}: one of {', '.join(CHANGES)}")
        bits |= CHANGES[name]
    if not bits:
        raise ValueError("no change to watch for")
    return bits


def checked_name(name: str) -> str:
    """A name a notification gave, with `/` between its components; ProtocolError where it
    is not a path below the watched directory."""
    parts = name.split("\\")
    if any(p in ("", ".", "..") or "/" in p or "\0" in p for p in parts) or \
            (len(parts[0]) >= 2 and parts[0][1] == ":" and len(parts) > 1):
        raise ProtocolError(f"the server reported a change of {name!r}, which is not a name below "
                            f"the watched directory: refused")
    return "/".join(parts)


async def watch(client, path: str, recursive: bool, changes=None) -> AsyncIterator[Change]:
    bits = completion_filter(DEFAULT_CHANGES if changes is None else changes)
    # (closing the directory answers a request still waiting: STATUS_NOTIFY_CLEANUP)
    async with client.directory(path) as r:
        while True:
            answer = await client.request(
                wire.CHANGE_NOTIFY, m.change_notify_request(r.file_id, NOTIFY_BUFFER, bits, recursive),
                payload=NOTIFY_BUFFER, expect=(wire.STATUS_SUCCESS, wire.STATUS_NOTIFY_ENUM_DIR, *ENDS),
                what=f"watch {path!r}")
            if answer.status in ENDS:
                return
            found = [] if answer.status == wire.STATUS_NOTIFY_ENUM_DIR else \
                m.parse_notifications(m.parse_output_buffer(answer.message, NOTIFY_BUFFER))
            if not found:       # (an empty answer says the same: Windows sends it so)
                yield Change("overflow", "")
                continue
            for action, name in found:
                yield Change(ACTIONS.get(action, f"action-{action}"), checked_name(name))
