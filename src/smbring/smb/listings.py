"""The names QUERY_DIRECTORY keeps for open directory handles, within `max listed names per
user`.

A scan (a handle's first QUERY_DIRECTORY, RESTART_SCANS, REOPEN) lists the directory's names,
sorted, and later requests on the handle go on through that list (`commands.directory`).
Each list is held until the handle closes or scans again: some 70 bytes a name, so a user
who opened many handles on a large directory and scanned each once held the server's memory
(2,000 handles on a directory of 30,000 names: 4.2 GB), whatever the bounds on opens.

So the names held are counted per user (the session's owner, as the other per-user bounds;
guests and anonymous sessions share one count; per worker), and a listing that takes its user
past the bound drops that user's least recently used other listings. A handle whose listing
was dropped keeps the last name it returned; its next request lists the directory again and
goes on after that name (the list is sorted: what follows the name then follows it now, as a
cursor in NTFS's index goes on). Other users' listings are never touched, and a handle's own
listing is kept whole however large the directory is.
"""
from __future__ import annotations

from collections import OrderedDict


class Listings:
    """The listings held, by the user they are counted to (least recently used first)."""

    def __init__(self) -> None:
        # owner -> {id(open): (open, the names counted for it)}
        self._users: dict[str, OrderedDict[int, tuple]] = {}
        self._held: dict[str, int] = {}

    def held(self, owner: str) -> int:
        """The names held for `owner`'s handles."""
        return self._held.get(owner, 0)

    def kept(self, o, owner: str, limit: int) -> None:
        """The open `o` holds a new listing (o.dir_entries), counted to `owner`; that user's
        least recently used other listings are dropped (`drop`) while the names held exceed
        `limit`."""
        self.forget(o)
        listings = self._users.setdefault(owner, OrderedDict())
        listings[id(o)] = (o, len(o.dir_entries))
        o.dir_owner = owner
        held = self._held.get(owner, 0) + len(o.dir_entries)
        while held > limit and len(listings) > 1:
            _key, (old, count) = listings.popitem(last=False)    # (never `o`: it is the last)
            held -= count
            old.dir_owner = None
            drop(old)
        self._held[owner] = held

    def used(self, o) -> None:
        """The open's listing was used: the last to be dropped from now on."""
        if o.dir_owner is not None:
            self._users[o.dir_owner].move_to_end(id(o))

    def forget(self, o) -> None:
        """The open's listing is no longer held (it closes, or scans again)."""
        owner = o.dir_owner
        if owner is None:
            return
        o.dir_owner = None
        listings = self._users[owner]
        _o, count = listings.pop(id(o))
        held = self._held[owner] - count
        if listings:
            self._held[owner] = held
        else:
            del self._users[owner], self._held[owner]


def drop(o) -> None:
    """Lets the open's listing go, keeping where its scan was: the last name it returned
    (None: none yet), after which its next request goes on (`commands.directory`)."""
    o.dir_after = o.dir_entries[o.dir_pos - 1] if o.dir_pos else None
    o.dir_resume = True
    o.dir_entries = None
