"""A client's path split and checked in C (an ASCII name) against the Python rules it stands
for, and the kernel lock test asked in C against real locks of another open file description."""
import fcntl
import itertools
import os
import random
import struct

import pytest

from smbring._dirent import range_locked, split_ascii_path
from smbring.vfs.api import BAD_CHARS, RESERVED, STREAMS_DIR, PathError, split_any_path, split_path


def python_answer(name: str):
    try:
        return split_any_path(name)
    except PathError as e:
        return e.kind


def c_answer(name: str):
    try:
        return split_path(name)
    except PathError as e:
        return e.kind


# what each component may be: the hostile spellings first
PIECES = ["", ".", "..", "a", "A.b", "con", "CoN.txt", "nul.", "com1", "COM9.x", "com0", "lpt10",
          "cons", "co", "aux.a.b", ".smbring-streams", ".SMBRING-Streams", ".smbring-streams.x",
          "x" * 63, "x" * 255, "x" * 256, "a*", "b?", "c:d", "e|f", 'g"h', "<", ">", "\t", "\x1f",
          "\x7f", "~1", " ", "a b", "trail.", "$DATA"]


def test_every_pair_of_components_as_python_splits_it():
    for a, b in itertools.product(PIECES, repeat=2):
        for sep in ("\\", "/", "\\\\", "/\\"):
            for name in (a + sep + b, sep + a + sep + b + sep, a):
                assert c_answer(name) == python_answer(name), repr(name)


def test_random_ascii_names_as_python_splits_them():
    rng = random.Random(20261207)
    alphabet = "aAcCoOnNpPrRlLtTuUxX1290.\\/:*?<>|\" \x00\x01\x1f-_~$"
    for _ in range(20000):
        name = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 24)))
        if rng.random() < 0.2:
            name = rng.choice(sorted(RESERVED)).lower() + name
        assert c_answer(name) == python_answer(name), repr(name)


def test_every_reserved_name_and_refused_character():
    for r in RESERVED:
        for spelled in (r, r.lower(), r.capitalize(), r + ".txt", r.lower() + ".a.b", "d\\" + r):
            assert c_answer(spelled) == "invalid" == python_answer(spelled)
    for ch in sorted(BAD_CHARS - {"/"}):
        assert c_answer("a" + ch) == "invalid" == python_answer("a" + ch), repr(ch)
    for ch in map(chr, range(32, 128)):
        if ch not in BAD_CHARS and ch not in "\\/.":
            assert c_answer("a" + ch) == ["a" + ch], repr(ch)


def test_the_first_refusal_in_order_decides():
    assert c_answer("..\\a*") == "syntax"
    assert c_answer("a*\\..\\..") == "invalid"
    assert c_answer("a\\..\\..") == "syntax"
    assert c_answer("a\\.\\b*") == "syntax"
    assert c_answer("a\\b\\..\\c") == ["a", "c"]
    assert c_answer("ok\\x\x00") == "invalid"


def test_a_name_of_other_characters_is_left_to_python():
    assert split_ascii_path("caf\u00e9", STREAMS_DIR) is None
    # (characters that upper-case or case-fold to ASCII: Python's rules decide)
    assert c_answer("\u0131nvalid") == ["\u0131nvalid"]
    assert c_answer("\u017fmbring") == ["\u017fmbring"]
    assert c_answer(".\u017fmbring-streams") == "invalid"       # (long s folds to s)
    assert c_answer("\U0001f600" * 64) == "invalid"             # 256 bytes encoded
    assert c_answer("d\\caf\u00e9") == ["d", "caf\u00e9"]


def test_components_are_new_strings_equal_to_the_name_s():
    name = "Dir\\Sub/File.TXT"
    parts = split_path(name)
    assert parts == ["Dir", "Sub", "File.TXT"] and all(type(p) is str for p in parts)
    assert split_path("") == [] and split_path("\\\\") == []


def test_wrong_arguments_raise():
    with pytest.raises(TypeError):
        split_ascii_path(b"a", STREAMS_DIR)
    with pytest.raises(TypeError):
        split_ascii_path("a")
    with pytest.raises(TypeError):
        split_ascii_path("a", None)
    with pytest.raises(ValueError):
        split_ascii_path("a", "d\u00e9p\u00f4t")


FLOCK = struct.Struct("hh4xqqi4x")


def set_lock(fd: int, kind: int, start: int, length: int) -> None:
    fcntl.fcntl(fd, fcntl.F_OFD_SETLK, FLOCK.pack(kind, os.SEEK_SET, start, length, 0))


def test_range_locked_sees_another_description_s_locks(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"x" * 100)
    mine, other = os.open(path, os.O_RDWR), os.open(path, os.O_RDWR)
    try:
        assert not range_locked(mine, 0, 100, True)
        set_lock(other, fcntl.F_RDLCK, 10, 10)
        assert range_locked(mine, 0, 100, True)         # a write meets its read lock
        assert not range_locked(mine, 0, 100, False)    # reads share
        assert not range_locked(mine, 0, 10, True) and not range_locked(mine, 20, 30, True)
        assert range_locked(mine, 19, 20, True)
        set_lock(other, fcntl.F_WRLCK, 50, 0)           # to the end of every file
        assert range_locked(mine, (1 << 63) - 2, (1 << 63) - 1, False)
        assert not range_locked(other, 0, 100, True)     # its own locks never conflict
        set_lock(mine, fcntl.F_WRLCK, 0, 5)
        assert range_locked(other, 4, 5, False) and not range_locked(other, 5, 6, False)
    finally:
        os.close(mine)
        os.close(other)


def test_range_locked_refuses_what_names_no_range_and_reports_the_kernel_s_errors(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"")
    fd = os.open(path, os.O_RDONLY)
    try:
        for start, end in ((5, 5), (6, 5), (-1, 3), (0, (1 << 63))):
            with pytest.raises((ValueError, OverflowError)):
                range_locked(fd, start, end, False)
        with pytest.raises(TypeError):
            range_locked(fd, 0, 1)
        with pytest.raises(TypeError):
            range_locked("fd", 0, 1, False)
        # (a write lock test on a read-only description: the kernel answers it all the same)
        assert range_locked(fd, 0, 1, True) is False
    finally:
        os.close(fd)
    with pytest.raises(OSError) as e:
        range_locked(fd, 0, 1, False)
    assert e.value.errno == 9       # EBADF
