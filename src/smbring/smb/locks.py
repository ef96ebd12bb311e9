"""Byte-range locks, shared by every connection of the server (MS-SMB2 3.3.5.14, MS-FSA 2.1.5.7):
one `ByteRangeLocks` per server, held by its `ServerState`.

A lock belongs to an open; locks on one file are found by (device, inode). Windows' rules, which
clients and smbtorture expect:

- an exclusive request conflicts with every overlapping lock, the requester's own included;
- a shared request conflicts only with another open's overlapping exclusive lock (an open may
  stack shared locks over its own exclusive one);
- a zero-length lock at X overlaps a range only when X lies strictly inside it; two zero-length
  locks never overlap;
- unlocking takes the exclusive one of several identical locks first.

Reads are refused over another open's exclusive lock, writes over any lock but the writer's own
exclusive one; zero-length locks never block I/O. A blocking request that conflicts waits:
`wait(key, retry)` calls `retry()` whenever a lock on the file is released.

Costs: a client may hold many locks (`Limits.max_locks` per open, many opens), so no operation
looks at every lock of a file. The rules above only ever ask how many locks of a kind overlap a
range (any lock, any shared lock, another open's exclusive lock = all exclusive locks minus the
open's own), and sorted multisets of the locks' starts and ends answer that in O(log n):
checking, taking and releasing a lock and checking an I/O are O(log n); closing an open costs
O(log n) per lock it held.
"""
from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Lock:
    offset: int
    length: int
    exclusive: bool
    owner: int          # id() of the open

    def overlaps(self, offset: int, length: int) -> bool:
        if not self.length and not length:
            return False
        if not length:
            return self.offset < offset < self.offset + self.length
        if not self.length:
            return offset < self.offset < offset + length
        return offset < self.offset + self.length and self.offset < offset + length


class SortedInts:
    """A sorted multiset of ints that adds, removes and ranks (counts the values below x) in
    O(log n): sorted blocks of at most 2 * BLOCK values (so an insert or removal moves at most
    that many), the blocks' sizes in a Fenwick tree for the ranks."""

    BLOCK = 1024

    def __init__(self) -> None:
        self.blocks: list[list[int]] = []
        self.maxes: list[int] = []       # the last value of each block
        self.tree: list[int] = []        # Fenwick tree over len(block)
        self.size = 0

    @classmethod
    def of(cls, values: list[int]) -> "SortedInts":
        """All of `values` at once: O(n log n), in C (a multiset read back whole)."""
        made = cls()
        values = sorted(values)
        made.blocks = [values[i:i + cls.BLOCK] for i in range(0, len(values), cls.BLOCK)]
        made.maxes = [block[-1] for block in made.blocks]
        made.size = len(values)
        made._rebuild()
        return made

    def below(self, x: int) -> int:
        """How many values are < x."""
        i = bisect_left(self.maxes, x)          # the first block holding a value >= x
        if i == len(self.blocks):
            return self.size
        return self._before(i) + bisect_left(self.blocks[i], x)

    def at_most(self, x: int) -> int:
        """How many values are <= x."""
        i = bisect_right(self.maxes, x)         # the first block holding a value > x
        if i == len(self.blocks):
            return self.size
        return self._before(i) + bisect_right(self.blocks[i], x)

    def add(self, x: int) -> None:
        if not self.blocks:
            self.blocks, self.maxes = [[x]], [x]
            self._rebuild()
        else:
            i = min(bisect_left(self.maxes, x), len(self.blocks) - 1)
            block = self.blocks[i]
            insort(block, x)
            self.maxes[i] = block[-1]
            if len(block) > 2 * self.BLOCK:
                self.blocks[i:i + 1] = [block[:self.BLOCK], block[self.BLOCK:]]
                self.maxes[i:i + 1] = [block[self.BLOCK - 1], block[-1]]
                self._rebuild()
            else:
                self._grow(i, 1)
        self.size += 1

    def remove(self, x: int) -> None:
        """Removes one x, which must be there."""
        i = bisect_left(self.maxes, x)
        block = self.blocks[i]
        del block[bisect_left(block, x)]
        if block:
            self.maxes[i] = block[-1]
            self._grow(i, -1)
        else:
            del self.blocks[i], self.maxes[i]
            self._rebuild()
        self.size -= 1

    def _before(self, i: int) -> int:       # values in blocks[:i]
        n = 0
        while i:
            n += self.tree[i - 1]
            i &= i - 1
        return n

    def _grow(self, i: int, by: int) -> None:
        i += 1
        while i <= len(self.tree):
            self.tree[i - 1] += by
            i += i & -i

    def _rebuild(self) -> None:             # after blocks were split or dropped: O(n / BLOCK)
        self.tree = [len(b) for b in self.blocks]
        for i in range(1, len(self.tree) + 1):
            parent = i + (i & -i)
            if parent <= len(self.tree):
                self.tree[parent - 1] += self.tree[i - 1]


class CountedRanges:
    """A multiset of locked ranges that counts those overlapping a range by Lock.overlaps'
    rules, in O(log n). A range [s, e) misses [a, b) exactly when s >= b or e <= a, and never
    both, so #overlapping = #(s < b) - #(e <= a): two sorted multisets, of starts and of ends,
    are enough. Zero-length locks are kept apart as points p, which overlap [a, b) when
    a < p < b; a zero-length request at x overlaps only ranges with s < x < e:
    #(s < x) - #(e <= x)."""

    def __init__(self) -> None:
        self.starts = SortedInts()
        self.ends = SortedInts()
        self.points = SortedInts()

    @classmethod
    def of(cls, ranges: list[tuple[int, int]]) -> "CountedRanges":
        """All of `ranges` ((offset, length) each) at once."""
        made = cls()
        made.starts = SortedInts.of([offset for offset, length in ranges if length])
        made.ends = SortedInts.of([offset + length for offset, length in ranges if length])
        made.points = SortedInts.of([offset for offset, length in ranges if not length])
        return made

    def add(self, offset: int, length: int) -> None:
        self._apply(SortedInts.add, offset, length)

    def remove(self, offset: int, length: int) -> None:
        self._apply(SortedInts.remove, offset, length)

    def _apply(self, change, offset: int, length: int) -> None:
        if length:
            change(self.starts, offset)
            change(self.ends, offset + length)
        else:
            change(self.points, offset)

    def overlapping(self, offset: int, length: int, points: bool = True) -> int:
        """How many overlap the range; `points=False` leaves zero-length locks out (they
        never block I/O)."""
        n = 0
        if self.starts.size:
            n = self.starts.below(offset + length if length else offset) - self.ends.at_most(offset)
        if length and points and self.points.size:
            n += self.points.below(offset + length) - self.points.at_most(offset)
        return n


@dataclass
class _Held:
    """One open's locks on one file."""
    # (offset, length) -> [exclusive, shared]: how many identical locks of each kind, for
    # unlocking (exact ranges, exclusive first) and for dropping them all at close
    ranges: dict[tuple[int, int], list[int]] = field(default_factory=dict)
    exclusive: CountedRanges = field(default_factory=CountedRanges)   # another open's = all minus these
    count: int = 0


@dataclass
class _File:
    shared: CountedRanges = field(default_factory=CountedRanges)
    exclusive: CountedRanges = field(default_factory=CountedRanges)
    owners: dict[int, _Held] = field(default_factory=dict)
    count: int = 0          # every owner's locks


class ByteRangeLocks:
    """Every byte-range lock of the server, by file ((device, inode)), and the requests waiting
    for one of them to be released."""

    def __init__(self) -> None:
        self._files: dict[tuple, _File] = {}
        self._waiters: dict[tuple, dict] = {}    # key -> {retry: None}, in the order they came

    def conflicts(self, key, offset: int, length: int, exclusive: bool, owner: int) -> bool:
        f = self._files.get(key)
        if f is None:
            return False
        if exclusive:
            return bool(f.exclusive.overlapping(offset, length) or f.shared.overlapping(offset, length))
        return bool(_others_exclusive(f, owner, offset, length))

    def acquire_all(self, key, wanted: list[Lock], confirm=None) -> bool:
        """Takes every lock or none. `confirm()`, called once all are taken here, may still
        refuse them (False): the kernel's locks, which other programs hold (smb.posix_locks)."""
        taken: list[Lock] = []
        for lk in wanted:
            if self.conflicts(key, lk.offset, lk.length, lk.exclusive, lk.owner):
                break
            self._add(key, lk)
            taken.append(lk)
        else:
            try:
                if confirm is None or confirm():
                    return True
            except BaseException:
                self.give_back(key, taken)
                raise
        self.give_back(key, taken)
        return False

    def give_back(self, key, taken: list[Lock]) -> int:
        """Takes back locks `acquire_all` took, each of its own kind, where still held (a
        close may have dropped them since); how many. Waiters are not woken (`wake`)."""
        given = 0
        for lk in taken:
            f = self._files.get(key)
            mine = f.owners.get(lk.owner) if f else None
            kinds = mine.ranges.get((lk.offset, lk.length)) if mine else None
            if kinds and kinds[0 if lk.exclusive else 1]:
                self._take_back(key, lk.offset, lk.length, lk.owner, lk.exclusive)
                given += 1
        return given

    def release(self, key, offset: int, length: int, owner: int, wake_waiters: bool = True) -> bool:
        """Releases one lock of the open with exactly this range, the exclusive one first. A
        caller releasing many at once passes wake_waiters=False and calls wake(key) once at the
        end."""
        f = self._files.get(key)
        mine = f.owners.get(owner) if f else None
        kinds = mine.ranges.get((offset, length)) if mine else None
        if kinds is None:
            return False
        self._take_back(key, offset, length, owner, exclusive=bool(kinds[0]))
        if wake_waiters:
            self.wake(key)
        return True

    def held(self, key, owner: int, within: tuple[int, int] | None = None) -> list[Lock]:
        """The locks an open holds on the file, by offset. `within` (start, end): only those
        of nonzero length reaching into [start, end), what the open's kernel lock there is
        made of (smb.posix_locks): a LOCK of one range beside the open's 4,096 others then
        makes no Lock of the others and sorts none of them."""
        f = self._files.get(key)
        mine = f.owners.get(owner) if f else None
        if mine is None:
            return []
        ranges = mine.ranges.items()
        if within is not None:
            start, end = within
            ranges = [held for held in ranges
                      if held[0][1] and held[0][0] < end and held[0][0] + held[0][1] > start]
        return sorted((Lock(offset, length, exclusive, owner)
                       for (offset, length), (exclusive_count, shared_count) in ranges
                       for exclusive in [True] * exclusive_count + [False] * shared_count),
                      key=lambda lk: (lk.offset, lk.length, not lk.exclusive))

    def release_owner(self, key, owner: int) -> int:
        """Drops every lock the open holds on the file (it is closing); how many it held."""
        f = self._files.get(key)
        mine = f.owners.pop(owner, None) if f else None
        if mine is None:
            return 0
        f.count -= mine.count
        for (offset, length), (exclusive, shared) in mine.ranges.items():
            for _ in range(exclusive):
                f.exclusive.remove(offset, length)
            for _ in range(shared):
                f.shared.remove(offset, length)
        if not f.owners:
            del self._files[key]
        self.wake(key)
        return mine.count

    def count(self, key, owner: int) -> int:
        """How many locks the open holds on the file (the core bounds it: Limits.max_locks)."""
        f = self._files.get(key)
        mine = f.owners.get(owner) if f else None
        return mine.count if mine else 0

    def on_file(self, key) -> int:
        """How many locks the file has, every open's (smb.posix_locks.kernel_steps)."""
        f = self._files.get(key)
        return f.count if f is not None else 0

    def io_allowed(self, key, offset: int, length: int, owner: int, write: bool) -> bool:
        f = self._files.get(key)
        if not length or f is None:
            return True
        if _others_exclusive(f, owner, offset, length, points=False):
            return False
        return not (write and f.shared.overlapping(offset, length, points=False))

    def wait(self, key, retry) -> None:
        """Calls retry() after each release on the file, until unwait(key, retry)."""
        self._waiters.setdefault(key, {})[retry] = None

    def unwait(self, key, retry) -> None:
        waiting = self._waiters.get(key)
        if waiting and retry in waiting:
            del waiting[retry]
            if not waiting:
                del self._waiters[key]

    def wake(self, key) -> None:
        """Lets every waiter on the file retry (after locks there were released)."""
        for retry in list(self._waiters.get(key, ())):
            if retry in self._waiters.get(key, ()):     # not withdrawn by an earlier retry meanwhile
                retry()

    def idle(self, key) -> bool:
        """Whether nothing about the file is kept: no lock held, no request waiting."""
        return key not in self._files and key not in self._waiters

    def _add(self, key, lk: Lock) -> None:
        f = self._files.get(key) or self._files.setdefault(key, _File())
        mine = f.owners.get(lk.owner) or f.owners.setdefault(lk.owner, _Held())
        kinds = mine.ranges.setdefault((lk.offset, lk.length), [0, 0])
        kinds[0 if lk.exclusive else 1] += 1
        mine.count += 1
        f.count += 1
        if lk.exclusive:
            f.exclusive.add(lk.offset, lk.length)
            mine.exclusive.add(lk.offset, lk.length)
        else:
            f.shared.add(lk.offset, lk.length)

    def _take_back(self, key, offset: int, length: int, owner: int, exclusive: bool) -> None:
        """Removes one lock known to be held; forgets the open, then the file, once empty."""
        f = self._files[key]
        mine = f.owners[owner]
        kinds = mine.ranges[(offset, length)]
        kinds[0 if exclusive else 1] -= 1
        if kinds == [0, 0]:
            del mine.ranges[(offset, length)]
        mine.count -= 1
        f.count -= 1
        if exclusive:
            f.exclusive.remove(offset, length)
            mine.exclusive.remove(offset, length)
        else:
            f.shared.remove(offset, length)
        if not mine.count:
            del f.owners[owner]
            if not f.owners:
                del self._files[key]


def _others_exclusive(f: _File, owner: int, offset: int, length: int, points: bool = True) -> int:
    """How many exclusive locks of other opens overlap the range."""
    mine = f.owners.get(owner)
    if mine is not None and len(f.owners) == 1:
        return 0                # the open is the only one holding locks on the file
    n = f.exclusive.overlapping(offset, length, points)
    return n - mine.exclusive.overlapping(offset, length, points) if n and mine else n
