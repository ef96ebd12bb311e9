"""smbring._dirent.network_open_info, an open's times, sizes and attributes encoded in C,
against smb.fileinfo's Python (time_fields, alloc_size, attributes): the same 52 bytes for real
files and directories with times before and after 1970, every DOS record and write time;
None (the Python's turn) for what it does not take."""
import os
import random
import struct

import pytest

from smbring._dirent import fstat as dirent_fstat
from smbring._dirent import network_open_info as c_open_info
from smbring.smb import wire
from smbring.smb.fileinfo import NETWORK_OPEN_INFO, alloc_size, attributes, network_open_info, time_fields
from smbring.smb.fs import DosInfo

U64 = 1 << 64


def reference(file_st, file_dos, write_ns, hidden, st, dos, is_dir) -> bytes:
    """What the CREATE response packed before the C (struct.error where a value does not fit)."""
    return NETWORK_OPEN_INFO.pack(*time_fields(file_st, file_dos, write_ns), alloc_size(st, dos),
                          0 if is_dir else st.st_size, attributes(file_st, file_dos, hidden=hidden))


def a_dos(rng: random.Random, st) -> DosInfo | None:
    if rng.random() < 0.3:
        return None
    def field(big: bool = True) -> int:
        return rng.choice([0, 0, 1, rng.randrange(1 << 32), rng.randrange(1 << 63),
                           *([rng.randrange(1 << 63, U64), U64, -1] if big else [])])
    return DosInfo(attrs=rng.choice([0, 0x1, 0x2, 0x20, 0x10, 0x200, 0x1 | 0x2, rng.randrange(1 << 32),
                                     rng.randrange(1 << 40)]),
                   create_time=field(), change_time=field(),
                   change_mtime_ns=rng.choice([st.st_mtime_ns % U64, st.st_mtime_ns % U64 + 1, field()]),
                   allocation=rng.choice([0, 4096, 1 << 20, field()]))


def test_open_info_in_c_is_the_python_encoding(tmp_path):
    rng = random.Random(7)
    paths = []
    for i, (kind, mode) in enumerate([("f", 0o644), ("f", 0o444), ("f", 0o600), ("d", 0o755), ("d", 0o555)]):
        p = tmp_path / f"{kind}{i}"
        if kind == "d":
            p.mkdir()
        else:
            p.write_bytes(b"x" * rng.choice([0, 1, 4095, 4096, 4097, 100_000]))
        p.chmod(mode)
        paths.append(p)
    compared = fallbacks = 0
    for _ in range(300):
        p = rng.choice(paths)
        # times before 1970 (negative ns: floor division), at it, and far ahead
        ns = rng.choice([0, -1, -99, -101, -(10 ** 18) - 7, 10 ** 18 + 99, 1_700_000_000_123_456_789,
                         rng.randrange(-(1 << 62), 1 << 62)])
        os.utime(p, ns=(ns + rng.randrange(1000), ns))
        fd = os.open(p, os.O_RDONLY)
        try:
            st = dirent_fstat(fd)
        finally:
            os.close(fd)
        assert st is not None
        for _ in range(40):
            file_dos = a_dos(rng, st)
            dos = file_dos if rng.random() < 0.7 else a_dos(rng, st)
            write_ns = rng.choice([None, None, 0, -1, -150, 10 ** 18, rng.randrange(-(1 << 63), 1 << 63), 1 << 64])
            hidden, is_dir = rng.random() < 0.3, rng.random() < 0.5
            args = (st, file_dos, write_ns, hidden, st, dos, is_dir)
            got = c_open_info(*args)
            try:
                want = reference(*args)
            except (struct.error, OverflowError):
                want = None
            if got is None:
                fallbacks += 1
                # the Python's turn: network_open_info gives what the Python gives, error included
                if want is not None:
                    assert network_open_info(*args) == want
                else:
                    with pytest.raises((struct.error, OverflowError)):
                        network_open_info(*args)
                continue
            compared += 1
            assert got == want, (p.name, ns, file_dos, dos, write_ns, hidden, is_dir)
            assert network_open_info(*args) == got
    assert compared > 3000 and fallbacks > 1000     # (both ways taken, many times)


def test_open_info_leaves_other_stats_to_the_python(tmp_path):
    """os.stat_result (a time past 64-bit ns, which the posix module's fstat declines) and
    anything else: None, and fileinfo.network_open_info encodes it in Python."""
    f = tmp_path / "f"
    f.write_bytes(b"abc")
    st = os.stat(f)
    assert c_open_info(st, None, None, False, st, None, False) is None
    assert network_open_info(st, None, None, False, st, None, False) == reference(st, None, None, False, st, None, False)
    times, alloc, eof, attrs = struct.unpack("<32sQQI", network_open_info(st, None, None, False, st, None, False))
    assert (alloc, eof, attrs) == (4096, 3, wire.ATTR_ARCHIVE)


@pytest.mark.parametrize("args", [
    (),
    (None,) * 6,
    (None,) * 8,
])
def test_open_info_refuses_wrong_arguments(args):
    with pytest.raises(TypeError):
        c_open_info(*args)


def test_open_info_refuses_a_dos_record_without_its_fields(tmp_path):
    fd = os.open(tmp_path, os.O_RDONLY)
    try:
        st = dirent_fstat(fd)
    finally:
        os.close(fd)
    with pytest.raises(AttributeError):
        c_open_info(st, object(), None, False, st, None, True)
    # a field that is no int: the Python's turn
    assert c_open_info(st, DosInfo(attrs="1"), None, False, st, None, True) is None
