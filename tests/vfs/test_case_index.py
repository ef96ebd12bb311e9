"""The share's index of names by case (vfs.case_index) against changes made behind the server's
back: whatever other programs do to a directory, match_case answers what a fresh read of the
directory answers, and the index holds no more directories and names than its limits."""
import os
import random

import pytest

from smbring._dirent import read_names
from smbring.vfs import case_index, posix
from smbring.vfs.case_index import CaseIndex
from smbring.vfs.posix import PosixVFS

MANY = 40       # entries: enough for the directory to be indexed (case_index.MIN_ENTRIES)


@pytest.fixture
def share(tmp_path):
    root = tmp_path / "share"
    (root / "big").mkdir(parents=True)
    for i in range(MANY):
        (root / "big" / f"File{i:03d}.txt").write_bytes(b"")
    vfs = PosixVFS(str(root))
    yield root, vfs
    vfs.close()


def fresh(root, parts):
    """What a read of the directory answers (the index bypassed)."""
    fd = os.open(os.path.join(root, *parts[:-1]), os.O_RDONLY | os.O_DIRECTORY)
    try:
        match = posix._same_but_case(read_names(fd), parts[-1])
    finally:
        os.close(fd)
    return parts[:-1] + [match if match is not None else parts[-1]]


def test_a_large_directory_is_indexed_and_answers_as_a_read(share):
    root, vfs = share
    assert vfs.match_case(["big", "FILE001.TXT"]) == ["big", "File001.txt"]
    assert vfs.case_index.directories == 1
    assert vfs.match_case(["big", "file002.TXT"]) == ["big", "File002.txt"]
    assert vfs.match_case(["big", "new.txt"]) == ["big", "new.txt"]


def test_changes_by_other_programs_are_seen_at_once(share, tmp_path):
    root, vfs = share
    big = root / "big"
    assert vfs.match_case(["big", "x"]) == ["big", "x"]             # indexed from here on
    assert vfs.case_index.directories == 1
    (big / "Made.Elsewhere").write_bytes(b"")
    assert vfs.match_case(["big", "made.elsewhere"]) == ["big", "Made.Elsewhere"]
    os.rename(big / "Made.Elsewhere", big / "RENAMED")
    assert vfs.match_case(["big", "made.elsewhere"]) == ["big", "made.elsewhere"]
    assert vfs.match_case(["big", "renamed"]) == ["big", "RENAMED"]
    os.unlink(big / "RENAMED")
    assert vfs.match_case(["big", "renamed"]) == ["big", "renamed"]
    os.mkdir(big / "SubDir")
    assert vfs.match_case(["big", "SUBDIR"]) == ["big", "SubDir"]
    os.rmdir(big / "SubDir")
    assert vfs.match_case(["big", "SUBDIR"]) == ["big", "SUBDIR"]
    (tmp_path / "Outside").write_bytes(b"")
    os.link(tmp_path / "Outside", big / "HardLink")                  # a link made into it
    assert vfs.match_case(["big", "hardlink"]) == ["big", "HardLink"]
    os.rename(big / "HardLink", root / "Moved")                       # and moved out of it
    assert vfs.match_case(["big", "hardlink"]) == ["big", "hardlink"]
    os.symlink("nowhere", big / "Dangling")
    assert vfs.match_case(["big", "DANGLING"]) == ["big", "Dangling"]


def test_a_directory_renamed_or_replaced_is_not_answered_for_by_its_old_index(share):
    root, vfs = share
    assert vfs.match_case(["big", "file000.txt"]) == ["big", "File000.txt"]
    os.rename(root / "big", root / "old")
    (root / "big").mkdir()
    (root / "big" / "Other").write_bytes(b"")
    assert vfs.match_case(["big", "file000.txt"]) == ["big", "file000.txt"]
    assert vfs.match_case(["big", "OTHER"]) == ["big", "Other"]
    assert vfs.match_case(["old", "FILE000.TXT"]) == ["old", "File000.txt"]   # followed by inode
    for name in os.listdir(root / "old"):
        os.unlink(root / "old" / name)
    os.rmdir(root / "old")
    assert vfs.match_case(["old", "FILE000.TXT"]) == ["old", "FILE000.TXT"]
    assert vfs.match_case(["big", "other"]) == ["big", "Other"]
    assert vfs.case_index.directories <= 1                             # the removed one forgotten


def test_several_spellings_answer_as_the_directory_order_does(share):
    root, vfs = share
    big = root / "big"
    for name in ("dup.TXT", "DUP.txt", "Dup.Txt"):
        (big / name).write_bytes(b"")
    vfs.match_case(["big", "x"])
    for asked in ("dup.txt", "DUP.TXT", "dup.TXT", "Dup.Txt"):
        assert vfs.match_case(["big", asked]) == fresh(root, ["big", asked])
    os.unlink(big / "DUP.txt")
    os.unlink(big / "dup.TXT")
    assert vfs.match_case(["big", "DUP.TXT"]) == ["big", "Dup.Txt"]


def test_random_changes_from_outside_never_lead_it_astray(share):
    root, vfs = share
    rnd = random.Random(7)
    stems = ["a", "b", "straße", "STRASSE", "ǅ", "ǆ", "Ω", "ω", "k", "\u212a"]      # Kelvin sign: K
    vfs.match_case(["big", "x"])
    for _ in range(400):
        name = "".join(rnd.choice((str.upper, str.lower, str))(rnd.choice(stems)) for _ in range(2))
        path = root / "big" / name
        action = rnd.random()
        if action < 0.5:
            path.write_bytes(b"")
        elif action < 0.7 and path.exists():
            path.unlink()
        elif action < 0.85 and path.exists():
            os.rename(path, root / "big" / rnd.choice(stems))
        asked = ["big", rnd.choice((str.upper, str.lower))(name)]
        assert vfs.match_case(asked) == fresh(root, asked)


def test_small_and_foreign_directories_are_read_each_time(tmp_path):
    root = tmp_path / "share"
    (root / "small").mkdir(parents=True)
    (root / "small" / "One").write_bytes(b"")
    vfs = PosixVFS(str(root))
    try:
        assert vfs.match_case(["small", "ONE"]) == ["small", "One"]
        assert vfs.case_index.directories == 0
        (root / "small" / "Two").write_bytes(b"")
        assert vfs.match_case(["small", "two"]) == ["small", "Two"]
    finally:
        vfs.close()
    index = CaseIndex(posix._same_but_case, read_names, min_entries=1)
    fd = os.open("/proc", os.O_RDONLY | os.O_DIRECTORY)      # no file system of local files
    try:
        assert index.same_but_case(fd, "SELF") == "self"
        assert index.directories == 0
    finally:
        os.close(fd)
        index.close()


def test_the_limits_hold_and_evicted_directories_are_read_again(tmp_path):
    dirs = []
    for d in range(5):
        path = tmp_path / f"d{d}"
        path.mkdir()
        for i in range(10):
            (path / f"N{i}").write_bytes(b"")
        dirs.append(path)
    index = CaseIndex(posix._same_but_case, read_names, max_directories=2, max_names=25, min_entries=5)
    try:
        for round_ in range(2):
            for path in dirs:
                fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    assert index.same_but_case(fd, "n3") == "N3"
                    (path / f"Late{round_}").write_bytes(b"")
                    os.lseek(fd, 0, os.SEEK_SET)
                    assert index.same_but_case(fd, f"LATE{round_}") == f"Late{round_}"
                finally:
                    os.close(fd)
                assert index.directories <= 2 and index._names <= 25
        too_big = CaseIndex(posix._same_but_case, read_names, max_names=5, min_entries=1, max_fingerprints=5)
        fd = os.open(dirs[0], os.O_RDONLY | os.O_DIRECTORY)
        try:
            assert too_big.same_but_case(fd, "n1") == "N1"
            assert too_big.directories == 0
        finally:
            os.close(fd)
            too_big.close()
    finally:
        index.close()


def test_a_lost_queue_starts_the_index_again(tmp_path):
    with open("/proc/sys/fs/inotify/max_queued_events") as f:
        queue = int(f.read())
    if queue > 40000:
        pytest.skip(f"the kernel queues {queue} events: too many to overflow here")
    big = tmp_path / "big"
    big.mkdir()
    for i in range(MANY):
        (big / f"F{i}").write_bytes(b"")
    index = CaseIndex(posix._same_but_case, read_names)
    fd = os.open(big, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert index.same_but_case(fd, "f1") == "F1"
        assert index.directories == 1
        for i in range(queue // 2 + 10):        # two events a round: more than the queue holds
            (big / "Churn").write_bytes(b"")
            os.unlink(big / "Churn")
        (big / "After").write_bytes(b"")
        os.lseek(fd, 0, os.SEEK_SET)
        assert index.same_but_case(fd, "after") == "After"
        os.lseek(fd, 0, os.SEEK_SET)
        assert index.same_but_case(fd, "churn") is None
    finally:
        os.close(fd)
        index.close()


def test_a_forked_child_keeps_an_index_of_its_own(tmp_path):
    """Parent and child would otherwise read one kernel queue: what one read, the other
    would miss."""
    big = tmp_path / "big"
    big.mkdir()
    for i in range(MANY):
        (big / f"F{i}").write_bytes(b"")
    index = CaseIndex(posix._same_but_case, read_names)

    def ask(name):
        fd = os.open(big, os.O_RDONLY | os.O_DIRECTORY)
        try:
            return index.same_but_case(fd, name)
        finally:
            os.close(fd)

    try:
        assert ask("f1") == "F1" and index.directories == 1
        pid = os.fork()
        if pid == 0:        # the child: its own queue, its directories read again
            ok = index.directories == 0
            (big / "ChildMade").write_bytes(b"")
            ok = ok and ask("childmade") == "ChildMade" and ask("f2") == "F2"
            os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        (big / "ParentMade").write_bytes(b"")
        assert ask("childmade") == "ChildMade" and ask("parentmade") == "ParentMade"
    finally:
        index.close()


def test_indexes_made_and_closed_leave_nothing_behind():
    """An index is made per share directory a worker serves (each snapshot directory reached
    too): made and closed, it must leave nothing in the process (a fork hook registered per index, which Python cannot
    unregister, kept ~800 bytes each for the process's life)."""
    import gc
    import tracemalloc
    for _ in range(50):
        CaseIndex(posix._same_but_case, read_names).close()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(2000):
            CaseIndex(posix._same_but_case, read_names).close()
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 100_000, grown


def _inotify_queues() -> int:
    return sum(os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:inotify" for fd in os.listdir("/proc/self/fd")
               if os.path.exists(f"/proc/self/fd/{fd}"))


def test_the_queue_is_made_with_the_first_directory_worth_indexing(tmp_path):
    """An index per share directory, 128 inotify queues per user by default (which the server's
    other watches and other programs of its user need too): an index whose lookups meet only
    small directories holds none."""
    small, big = tmp_path / "small", tmp_path / "big"
    small.mkdir()
    big.mkdir()
    (small / "Only").write_bytes(b"")
    for i in range(MANY):
        (big / f"F{i}").write_bytes(b"")
    before = _inotify_queues()
    indexes = [CaseIndex(posix._same_but_case, read_names) for _ in range(20)]
    try:
        for index in indexes:
            fd = os.open(small, os.O_RDONLY | os.O_DIRECTORY)
            try:
                assert index.same_but_case(fd, "only") == "Only"
            finally:
                os.close(fd)
        assert _inotify_queues() == before
        fd = os.open(big, os.O_RDONLY | os.O_DIRECTORY)
        try:
            assert indexes[0].same_but_case(fd, "f7") == "F7" and indexes[0].directories == 1
        finally:
            os.close(fd)
        assert _inotify_queues() == before + 1
    finally:
        for index in indexes:
            index.close()
    assert _inotify_queues() == before


def test_short_names_are_answered_from_the_index_and_follow_changes(share):
    """An indexed directory's long names by 8.3 short name: found, then kept current as other
    programs make, rename and remove files (each answer as a read of the directory gives)."""
    from smbring.vfs.short_names import long_name_of, short_name
    root, vfs = share
    first, second = "a first long name.text", "another long file name.docx"
    (root / "big" / first).write_bytes(b"")
    short = short_name(first)
    assert vfs.match_case(["big", short], short_names=True) == ["big", first]
    assert vfs.case_index.directories == 1
    assert vfs.match_case(["big", short_name(second)], short_names=True) == ["big", short_name(second)]
    (root / "big" / second).write_bytes(b"")           # made behind the server's back
    assert vfs.match_case(["big", short_name(second)], short_names=True) == ["big", second]
    os.rename(root / "big" / first, root / "big" / "renamed long file.text")
    assert vfs.match_case(["big", short], short_names=True) == ["big", short]
    assert vfs.match_case(["big", short_name("renamed long file.text")], short_names=True) == \
        ["big", "renamed long file.text"]
    os.unlink(root / "big" / second)
    assert vfs.match_case(["big", short_name(second)], short_names=True) == ["big", short_name(second)]
    # without short names asked for, a short name is only itself
    assert vfs.match_case(["big", short_name("renamed long file.text")]) == \
        ["big", short_name("renamed long file.text")]
    fd = os.open(root / "big", os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert long_name_of(read_names(fd), short_name("renamed long file.text")) == "renamed long file.text"
    finally:
        os.close(fd)


def test_a_short_name_in_a_directory_not_indexed_is_found_in_one_read(tmp_path):
    """A name not found in any case that may be a mangled 8.3 name, in a directory the index
    does not keep (too few names): its long name is looked for in the names the case lookup
    read, not in a second read of the directory; a name found by its case is read once too."""
    from smbring.vfs.short_names import short_name
    (tmp_path / "a long file name.text").write_bytes(b"")
    (tmp_path / "Other").write_bytes(b"")
    reads = []

    def counting(fd):
        reads.append(fd)
        return read_names(fd)
    index = CaseIndex(posix._same_but_case, counting)        # (min_entries: 64 names)
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert index.find(fd, short_name("a long file name.text"), mangled=True) == "a long file name.text"
        assert len(reads) == 1 and index.directories == 0
        os.lseek(fd, 0, os.SEEK_SET)
        assert index.find(fd, "OTHER", mangled=False) == "Other"
        assert index.find(fd, "NOPE~1", mangled=True) is None
        assert len(reads) == 3
    finally:
        os.close(fd)
        index.close()


def test_two_long_names_of_one_short_name_answer_in_turn(share):
    """Two long names whose mangled short names are the same: the first answers for it, and
    once it is removed (behind the server's back: the index hears of it) the other one does,
    without the directory being read again (before, nothing answered until then)."""
    from smbring.vfs.short_names import mangled_name
    root, vfs = share
    seen = {}
    for i in range(5000):       # two names of one short name: a collision of its hash
        name = f"a long shared name {i}.text"
        first = seen.setdefault(mangled_name(name), name)
        if first != name:
            second, short = name, mangled_name(name)
            break
    (root / "big" / first).write_bytes(b"")
    (root / "big" / second).write_bytes(b"")
    assert vfs.match_case(["big", short], short_names=True) == ["big", first]
    assert vfs.case_index.directories == 1
    os.unlink(root / "big" / first)
    assert vfs.match_case(["big", short], short_names=True) == ["big", second]
    os.unlink(root / "big" / second)
    assert vfs.match_case(["big", short], short_names=True) == ["big", short]
    assert vfs.case_index.directories == 1      # (answered by the index all along)


def counting_reads():
    reads = []

    def read(fd):
        reads.append(fd)
        return read_names(fd)
    return reads, read


def test_a_directory_too_large_for_its_names_answers_a_new_name_without_a_read(tmp_path):
    """Over max_names entries a directory keeps fingerprints of its names' case folds: a name
    that is there in no case (a new file's) is answered without reading the directory; one
    that is there in another case is read for; changes from outside are followed; the
    fingerprints are within their own bound."""
    big = tmp_path / "big"
    big.mkdir()
    for i in range(300):
        (big / f"Entry{i:04d}.dat").write_bytes(b"")
    reads, read = counting_reads()
    index = CaseIndex(posix._same_but_case, read, max_names=100, min_entries=5, max_fingerprints=1000)
    fd = os.open(big, os.O_RDONLY | os.O_DIRECTORY)

    def ask(name):
        os.lseek(fd, 0, os.SEEK_SET)
        return index.same_but_case(fd, name)
    try:
        assert ask("new.txt") is None and index.directories == 1
        assert index._fingerprints == 300 and index._names == 0
        first = len(reads)
        for i in range(50):
            assert ask(f"new{i}.txt") is None
        assert len(reads) == first                          # no read for a new name
        assert ask("ENTRY0042.DAT") == "Entry0042.dat"      # there in another case: read
        assert len(reads) == first + 1
        (big / "Made.Elsewhere").write_bytes(b"")
        assert ask("made.elsewhere") == "Made.Elsewhere"
        os.unlink(big / "Entry0001.dat")
        before = len(reads)
        assert ask("entry0001.dat") is None and len(reads) == before
        os.rename(big / "Entry0002.dat", big / "Moved")
        assert ask("ENTRY0002.DAT") is None and ask("moved") == "Moved"
        assert ask("ENTR~ZZZ.DAT") is None                  # (no 8.3 names answered here)
        assert index._fingerprints == 300
    finally:
        os.close(fd)
        index.close()


def test_fingerprints_never_hide_a_name_through_many_changes(tmp_path, monkeypatch):
    """Random creations, deletions and renames from outside, past the point where the changes
    are merged into the sorted fingerprints: every answer is what a read of the directory
    gives (and a name missing in every case is answered without one)."""
    big = tmp_path / "big"
    big.mkdir()
    for i in range(200):
        (big / f"F{i}").write_bytes(b"")
    merges = []
    tidy = case_index._Fingerprints._tidy
    monkeypatch.setattr(case_index._Fingerprints, "MERGE_AT", 16)
    monkeypatch.setattr(case_index._Fingerprints, "_tidy",
                        lambda self: (merges.append(len(self._added) + len(self._removed) >= 16), tidy(self)))
    reads, read = counting_reads()
    index = CaseIndex(posix._same_but_case, read, max_names=50, min_entries=5, max_fingerprints=100_000)
    fd = os.open(big, os.O_RDONLY | os.O_DIRECTORY)
    rnd = random.Random(11)
    unread = 0          # answers of "in no case" given without a read
    stems = [f"n{i}" for i in range(60)] + ["straße", "STRASSE", "Ω", "ω", "\u212a", "k"]
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        index.same_but_case(fd, "x")
        for step in range(3000):       # (the changes merge every 16 fingerprints here)
            name = rnd.choice((str.upper, str.lower, str))(rnd.choice(stems))
            path = big / name
            action = rnd.random()
            if action < 0.5:
                path.write_bytes(b"")
            elif action < 0.8 and path.exists():
                path.unlink()
            elif path.exists() and not (big / (target := rnd.choice(stems))).exists():
                # (onto a name not there: a rename over a file raises no event for the file
                # it replaces, so that name's fingerprint would count one too many, which
                # costs its next questions a read, never a wrong answer)
                os.rename(path, big / target)
            if step % 7 == 0:
                asked = rnd.choice((str.upper, str.lower))(rnd.choice(stems))
                os.lseek(fd, 0, os.SEEK_SET)
                before = len(reads)
                got = index.same_but_case(fd, asked)
                assert [got if got is not None else asked] == fresh(big, [asked])[-1:], asked
                if not any(n.casefold() == asked.casefold() for n in os.listdir(big)):
                    assert len(reads) == before, asked      # (the removals merged too)
                    unread += 1
        assert index.directories == 1 and sum(merges) > 10 and unread > 50
    finally:
        os.close(fd)
        index.close()


def test_a_removal_never_counted_cannot_hide_a_name_added_later():
    """A change both in the first read and in the queue (CaseIndex._first_look) may come as a
    removal of a name the fingerprints never held: it is ignored, never counted below zero,
    so the name made again afterwards is not hidden."""
    prints = case_index._Fingerprints((0, 0), 1, ["a", "A", "b"])
    prints.remove("c")
    prints.add("C")
    assert prints.may_hold("c") and prints.count == 4
    prints.remove("a")
    assert prints.may_hold("A")         # "A" is still there
    prints.remove("A")
    prints.remove("a")                  # (seen twice)
    assert not prints.may_hold("a") and prints.count == 2
    prints.add("a")
    assert prints.may_hold("A")
