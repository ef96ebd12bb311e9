"""Share modes between opens of one file, across all connections (MS-FSA 2.1.5.1.2): one
`ShareModes` per server, held by its `ServerState`.

An open that reads, writes or deletes says which of those it lets later opens do
(ShareAccess); a new open is refused with STATUS_SHARING_VIOLATION when it wants what an
existing open does not share, or does not share what an existing open does. Opens that only
read or write attributes take no part.
"""
from __future__ import annotations

READ, WRITE, DELETE = 1, 2, 4          # also the SHARE_READ / SHARE_WRITE / SHARE_DELETE bits


_READ_BITS = 0x1 | 0x20 | 0x80000000 | 0x20000000 | 0x10000000   # READ_DATA EXECUTE GENERIC_*
_WRITE_BITS = 0x2 | 0x4 | 0x40000000 | 0x10000000                # WRITE/APPEND_DATA GENERIC_*
_DELETE_BITS = 0x10000 | 0x10000000                              # DELETE GENERIC_ALL
MAXIMUM_ALLOWED = 0x02000000


def categories(access: int) -> int:
    if access & MAXIMUM_ALLOWED:
        return READ | WRITE | DELETE
    return ((READ if access & _READ_BITS else 0) | (WRITE if access & _WRITE_BITS else 0) |
            (DELETE if access & _DELETE_BITS else 0))


def blocks_rename_in(wants: int, share: int) -> bool:
    """Whether an open of a directory (what it wants and shares, as `categories` and the SHARE_*
    bits) stops a rename of a file in it. Windows renames by opening the directory for writing
    (FILE_ADD_FILE), sharing read and write: a rename is refused (SHARING_VIOLATION) when an
    open of the directory wants DELETE or does not share writing, and allowed beside one that
    reads and writes it sharing both. Opens that only read or write attributes never stop one."""
    return bool(wants) and bool(wants & DELETE or not share & WRITE)


class ShareModes:
    """The access and share mode of every open that takes part, by file ((device, inode))."""

    def __init__(self) -> None:
        self._opens: dict[tuple, dict[int, tuple[int, int]]] = {}   # key -> owner -> (wants, shares)

    def allowed(self, key, access: int, share: int) -> bool:
        """Whether an open with this access and share mode may join the file's opens."""
        others = self._opens.get(key)
        if not others:          # (the file's first open: nothing to conflict with)
            return True
        return self._fits(others, categories(access), share & (READ | WRITE | DELETE))

    @staticmethod
    def _fits(others: dict, wants: int, share: int) -> bool:
        if not wants:
            return True
        return not any(wants & ~other_share or other_wants & ~share
                       for other_wants, other_share in others.values()
                       if other_wants)     # an attribute-only open shares everything

    def check_and_add(self, key, owner: int, access: int, share: int) -> bool:
        """Registers the open unless it conflicts; False means STATUS_SHARING_VIOLATION."""
        wants, share = categories(access), share & (READ | WRITE | DELETE)
        others = self._opens.get(key)
        if others is None:
            self._opens[key] = {owner: (wants, share)}
            return True
        if not self._fits(others, wants, share):
            return False
        others[owner] = (wants, share)
        return True

    def remove(self, key, owner: int) -> None:
        entries = self._opens.get(key)
        if entries is not None:
            entries.pop(owner, None)
            if not entries:
                del self._opens[key]

    def others_share(self, key, owner: int, what: int) -> bool:
        """Whether every other open of the file shares `what` (e.g. DELETE before a rename)."""
        return all(share & what for other, (_wants, share) in self._opens.get(key, {}).items()
                   if other != owner)

    def blocks_child_rename(self, key) -> bool:
        """Whether an open of a directory stops renames inside it (blocks_rename_in)."""
        return any(blocks_rename_in(wants, share) for wants, share in self._opens.get(key, {}).values())

    def has_writer(self, key) -> bool:
        """Whether any open of the file may write its data (splicing it is then unsafe)."""
        return any(wants & WRITE for wants, _share in self._opens.get(key, {}).values())

    def has_writer_here(self, key) -> bool:
        """Whether an open of this process may write the file (the server's own changes, for
        change notify); with one process, has_writer."""
        return self.has_writer(key)

    def of(self, key, owner: int) -> tuple[int, int] | None:
        """What an open takes part with (read-only, for status): (READ|WRITE|DELETE it
        wants, the same bits it shares), None when it takes no part."""
        return self._opens.get(key, {}).get(owner)

    def count(self, key) -> int:
        """How many opens the file has (all of them, attribute-only ones included)."""
        return len(self._opens.get(key, ()))
