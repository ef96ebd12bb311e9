"""How much a server's listings may make the client do.

A server says what a directory holds, and a hostile one can invent names for ever: a listing
that never ends, a tree of ever new files and directories. Each is bounded here, by limits
large enough for real shares (`Limits`), and a listing that goes round is refused without
keeping the names it gave (`NameRepeats`). Reaching a limit raises
errors.LimitExceeded, which names the limit and its value.
"""
from __future__ import annotations

# entries one listing may give (. and .. aside). listdir and get hold one response's batch
# at a time; `smbring ls` holds every entry, to sort them: about 500 bytes each (a name of
# some 30 characters), some 2.5 GB at this limit
DEFAULT_MAX_ENTRIES = 5_000_000
DEFAULT_MAX_FILES = 10_000_000        # files one get of a tree may write
DEFAULT_MAX_DIRECTORIES = 1_000_000   # directories it may make (below the one asked for)
DEFAULT_MAX_DEPTH = 64                # directory levels it follows


class Limits:
    """The limits of one client (`Client.limits`; `connect(limits=...)`): `entries` per
    listing (listdir, ls, and each directory of a get), `files`, `directories` and `depth`
    per get of a tree. Each must be at least 1."""

    __slots__ = ("entries", "files", "directories", "depth")

    def __init__(self, entries: int = DEFAULT_MAX_ENTRIES, files: int = DEFAULT_MAX_FILES,
                 directories: int = DEFAULT_MAX_DIRECTORIES, depth: int = DEFAULT_MAX_DEPTH):
        for name, value in (("entries", entries), ("files", files),
                            ("directories", directories), ("depth", depth)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"the limit {name} must be a whole number of at least 1, "
                                 f"not {value!r}")
        self.entries, self.files, self.directories, self.depth = entries, files, directories, depth

    def __repr__(self) -> str:
        return "Limits(" + ", ".join(f"{n}={getattr(self, n)}" for n in self.__slots__) + ")"


class NameRepeats:
    """Whether a listing goes round, with one name kept (Brent's cycle detection): a name is
    saved at the 1st, 3rd, 7th, 15th ... name and compared with the names after it. A listing
    whose names come round again, the same ones in the same order, lists the saved name again
    within about three times the names it gave before that round ended; no directory lists a
    name twice, so a match is never a real listing's. (A server that goes round less
    regularly is stopped by the limit on entries instead.)"""

    __slots__ = ("_saved", "_window", "_since")

    def __init__(self):
        self._saved: str | None = None
        self._window = 1
        self._since = 0

    def seen(self, name: str) -> bool:
        """True when `name` is the saved name: listed before."""
        if name == self._saved:
            return True
        self._since += 1
        if self._since == self._window:
            self._saved, self._window, self._since = name, self._window * 2, 0
        return False
