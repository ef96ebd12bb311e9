"""Adversarial probes of what one client may make the server compute or hold, beyond the
counted limits of test_limits_core.py: the cost of a QUERY_DIRECTORY pattern, EA lists,
create contexts and security descriptors as large as a frame allows, and named-pipe writes
full of tiny DCE/RPC PDUs (from an anonymous session). Each probe runs against a real server while a second
connection measures its ECHO round trips: one process serves every client, so a request that
stalls the event loop stalls everyone.

Timings are generous correctness bounds (the loop stalled for seconds), not performance claims.
"""
from __future__ import annotations

import struct
import threading
import time

import pytest

from raw import Disconnected, NoAnswer, query_directory_body
from smbring.smb import wire

FILE_DIRECTORY_FILE = 0x1
STATUS_OBJECT_NAME_INVALID = 0xC0000033
STATUS_PIPE_DISCONNECTED = 0xC00000B0
STALL = 1.0         # the longest another client's ECHO may wait, in seconds


class EchoWatch:
    """A second client's ECHOs, sent back to back in a thread while a probe runs: the slowest
    round trip is how long the probe stalled the event loop for everyone else. `slowest_cpu`
    is the most CPU time the server used during one round trip: the stall a computation
    caused, which (unlike the wall time) does not grow when other work shares the machine."""

    def __init__(self, server):
        self.server = server
        self.client, self.session = server.logon(timeout=30)
        self.slowest = 0.0
        self.slowest_cpu = 0.0
        self.failure: Exception | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            start, cpu = time.monotonic(), self.server.cpu_seconds()
            try:
                r = self.client.echo(session=self.session)
                assert r.status == wire.STATUS_SUCCESS, r
            except Exception as e:      # noqa: BLE001 - reported by the test
                self.failure = e
                return
            self.slowest = max(self.slowest, time.monotonic() - start)
            self.slowest_cpu = max(self.slowest_cpu, self.server.cpu_seconds() - cpu)
            time.sleep(0.02)

    def __enter__(self):
        self._thread.start()
        time.sleep(0.1)
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(60)
        assert self.failure is None, f"the other client's ECHO failed: {self.failure!r}"


@pytest.fixture(scope="module")
def default(servers):
    return servers()


def open_dir(tree, name: str) -> bytes:
    return tree.open(name, wire.GENERIC_READ, wire.FILE_OPEN_IF, FILE_DIRECTORY_FILE)


# -- 1. QUERY_DIRECTORY patterns ---------------------------------------------------------------
def listing_dir(server, count: int = 200) -> str:
    folder = server.path("rw") / "many"
    if not folder.exists():
        folder.mkdir()
        for i in range(count):
            (folder / (f"{i:05d}" + "a" * 240)).touch()
    return folder.name


def long_patterns(n: int, length: int):
    """Distinct patterns of `length` characters, stars between letters: each compiles to a
    regular expression of its own."""
    for i in range(n):
        tag = f"{i:04d}"
        body = "<a" * ((length - len(tag)) // 2)
        yield (tag + body)[:length]


def test_long_wildcard_patterns_do_not_stall_other_clients(default):
    """A pattern is one name component (MS-FSCC 2.1.5: at most 255 characters); one of 32,000
    characters took over a second to compile, and each new one kept its compiled form."""
    c, s = default.logon(timeout=120)
    rw = c.tree(s, "rw")
    fid = open_dir(rw, listing_dir(default))
    with EchoWatch(default) as watch:
        start = default.cpu_seconds()
        # one frame: the requests of a compound are served one after another
        queries = [rw.message(wire.QUERY_DIRECTORY, query_directory_body(fid, pattern, flags=0x1), payload=65536)
                   for pattern in long_patterns(16, 32000)]       # RESTART_SCANS: each pattern is used
        statuses = {r.status for r in c.compound(queries)}
        took = default.cpu_seconds() - start
    # CPU seconds of the server, not wall time: a loaded machine stretches the latter alone
    assert watch.slowest_cpu < STALL and took < 4 * STALL, \
        f"slowest ECHO {watch.slowest_cpu:.2f} s of CPU ({watch.slowest:.2f} s), patterns {took:.2f} s of CPU"
    assert statuses == {STATUS_OBJECT_NAME_INVALID}, statuses


def test_compound_of_longest_patterns_is_served_without_stalling_and_keeps_memory(default):
    """128 distinct patterns of 255 characters (the longest a name can be) in each of four
    frames: the loop stays responsive and the compiled patterns are not all kept."""
    c, s = default.logon(timeout=120)
    rw = c.tree(s, "rw")
    fid = open_dir(rw, listing_dir(default))
    c.grow_credits(1024)
    before = default.proc_status("VmRSS")
    patterns = list(long_patterns(512, 255))
    with EchoWatch(default) as watch:
        statuses = set()
        for frame in range(4):
            queries = [rw.message(wire.QUERY_DIRECTORY, query_directory_body(fid, pattern, flags=0x1),
                                  payload=65536) for pattern in patterns[frame * 128:(frame + 1) * 128]]
            statuses |= {r.status for r in c.compound(queries)}
    grew = (default.proc_status("VmRSS") - before) // 1024
    assert statuses <= {wire.STATUS_SUCCESS, wire.STATUS_NO_SUCH_FILE}, statuses
    # (a frame of 128 patterns of 255 characters is the costliest a pattern can make: about
    # 0.3 s of the loop's CPU; counted in CPU time, as a loaded machine stretches wall time
    # alone: 4-6 s for the same ECHO beside four busy processes)
    assert watch.slowest_cpu < 2 * STALL, f"slowest ECHO {watch.slowest_cpu:.2f} s of CPU ({watch.slowest:.2f} s)"
    assert grew < 64, f"RSS grew by {grew} MiB"


@pytest.mark.parametrize("pattern, listed", [
    ("[ab]*", ["[ab] file"]), ("*]", ["x]"]), ("a?c", ["abc"]), ("A<", ["a", "abc"]), ("*.TXT", ["b.txt"]),
    ("b\"txt", ["b.txt"]), ("x>", ["x]"]),
], ids=["bracket", "closing-bracket", "question-mark", "dos-star", "case", "dos-dot", "dos-qm"])
def test_patterns_match_as_dos_wildcards(default, pattern, listed):
    """`[` and `]` are plain characters in a DOS pattern, not a set."""
    folder = default.path("rw") / "wild"
    if not folder.exists():
        folder.mkdir()
        for name in ("[ab] file", "a", "abc", "b.txt", "x]"):
            (folder / name).touch()
    c, s = default.logon()
    rw = c.tree(s, "rw")
    fid = open_dir(rw, "wild")
    r = rw.query_directory(fid, pattern, klass=12)          # FileNamesInformation
    assert r.status == wire.STATUS_SUCCESS, r
    out, names = r.buffer(2), []
    while out:
        next_offset, _index, length = struct.unpack_from("<III", out)
        names.append(out[12:12 + length].decode("utf-16-le"))
        out = out[next_offset:] if next_offset else b""
    assert names == listed


# -- 3. sizes a client chooses --------------------------------------------------------------
MiB = 1 << 20
FILE_FULL_EA_INFORMATION = 15
STATUS_EA_TOO_LARGE = 0xC0000050


def tiny_eas(size: int) -> bytes:
    """EA entries of 12 bytes (a one-letter name, no value), NextEntryOffset 12, filling `size`
    bytes: the most entries a buffer of that size can hold."""
    entry = struct.pack("<IBBH", 12, 0, 1, 0) + b"e\0\0\0"
    count = size // 12
    return entry * (count - 1) + struct.pack("<IBBH", 0, 0, 1, 0) + b"e\0\0\0"


def probe(server, action):
    """(action's result, the other client's slowest ECHO and the action, both in the server's
    CPU seconds (a loaded machine stretches wall time alone), peak RSS growth in MiB)."""
    before = server.proc_status("VmHWM")
    with EchoWatch(server) as watch:
        start = server.cpu_seconds()
        try:
            result = action()
        except (Disconnected, NoAnswer) as e:
            result = e
        took = server.cpu_seconds() - start
    return result, watch.slowest_cpu, took, (server.proc_status("VmHWM") - before) // 1024


def test_set_info_with_most_ea_entries_a_frame_holds(fresh_servers):
    server = fresh_servers()
    c, s = server.logon(timeout=120)
    rw = c.tree(s, "rw")
    fid = rw.open("eas.bin", wire.GENERIC_READ | wire.GENERIC_WRITE, wire.FILE_OVERWRITE_IF)
    c.grow_credits(256)
    data = tiny_eas(8 * MiB - 4096)
    r, slowest, took, grew = probe(server, lambda: rw.set_info(fid, wire.INFO_FILE, FILE_FULL_EA_INFORMATION,
                                                               data, payload=len(data)))
    assert slowest < STALL and grew < 64, f"slowest ECHO {slowest:.2f} s, took {took:.2f} s, peak RSS +{grew} MiB"
    assert r.status == STATUS_EA_TOO_LARGE, r
    # 64 KiB of them, NTFS's most, are taken (as many as the file system stores)
    r, slowest, took, grew = probe(server, lambda: rw.set_info(fid, wire.INFO_FILE, FILE_FULL_EA_INFORMATION,
                                                               tiny_eas(65536), payload=65536))
    assert r.status == wire.STATUS_SUCCESS and slowest < STALL, (r, slowest)


def tiny_contexts(size: int) -> bytes:
    """CREATE contexts of 16 bytes whose four-byte name is their own Next field (16): the most
    contexts a buffer of `size` bytes can hold."""
    entry = struct.pack("<IHHHHI", 16, 0, 4, 0, 0, 0)
    return entry * (size // 16 - 1) + struct.pack("<IHHHHI", 0, 0, 4, 0, 0, 0)


def test_create_with_most_contexts_a_frame_holds_is_refused_at_once(fresh_servers):
    server = fresh_servers()
    c, s = server.logon(timeout=120)
    rw = c.tree(s, "rw")
    c.grow_credits(256)
    name = wire.utf16("contexts.bin")
    contexts = tiny_contexts(8 * MiB - 4096)
    body = struct.pack("<HBBIQQIIIIIHHII", 57, 0, 0, 2, 0, 0, wire.GENERIC_READ, 0, 7, wire.FILE_OPEN_IF, 0,
                       120, len(name), 120 + len(name), len(contexts)) + name + contexts
    r, slowest, took, grew = probe(server, lambda: rw.request(wire.CREATE, body, payload=len(body)))
    assert slowest < STALL and grew < 64, f"slowest ECHO {slowest:.2f} s, took {took:.2f} s, peak RSS +{grew} MiB"
    assert r.status == wire.STATUS_INVALID_PARAMETER, r
    # 128 contexts (unknown ones, ignored) are taken
    r = rw.create("contexts.bin", disposition=wire.FILE_OPEN_IF, contexts=[(b"Zz%02d" % i, b"") for i in range(128)])
    assert r.status == wire.STATUS_SUCCESS, r


def test_create_with_most_eas_a_frame_holds(fresh_servers):
    server = fresh_servers()
    c, s = server.logon(timeout=120)
    rw = c.tree(s, "rw")
    c.grow_credits(256)
    eas = tiny_eas(8 * MiB - 4096)
    r, slowest, took, grew = probe(server, lambda: rw.create(
        "eas.bin", wire.GENERIC_READ | wire.GENERIC_WRITE, wire.FILE_OVERWRITE_IF, contexts=[(b"ExtA", eas)],
        payload=len(eas)))
    assert slowest < STALL and grew < 64, f"slowest ECHO {slowest:.2f} s, took {took:.2f} s, peak RSS +{grew} MiB"
    assert r.status == STATUS_EA_TOO_LARGE, r


# -- 4. DCE/RPC on IPC$, reached by an anonymous session ------------------------------------
def srvsvc_bind() -> bytes:
    from smbring.smb.rpc import pdu, srvsvc
    context = struct.pack("<HBB", 0, 1, 0) + srvsvc.SYNTAX.pack() + pdu.NDR.pack()
    body = struct.pack("<HHIB3x", 4280, 4280, 0, 1) + context
    return pdu.header(pdu.BIND, pdu.PFC_FIRST_FRAG | pdu.PFC_LAST_FRAG, pdu.HEADER_SIZE + len(body), 1) + body


def anonymous_pipe(server, name: str = "srvsvc"):
    from test_anonymous import anonymous_exchange
    c = server.client(timeout=120)
    assert c.negotiate((wire.SMB311,)).status == wire.STATUS_SUCCESS
    s = anonymous_exchange(c)
    assert s.status == wire.STATUS_SUCCESS, s.last
    ipc = c.tree(s, "IPC$")
    return c, ipc, ipc.open(name, wire.GENERIC_READ | wire.GENERIC_WRITE)


def test_pipe_write_of_most_pdus_a_frame_holds(fresh_servers):
    """One WRITE to a pipe of 8 MiB: a BIND, then half a million 16-byte PDUs (CO_CANCEL,
    which the pipe takes and ignores)."""
    from smbring.smb.rpc import pdu
    server = fresh_servers()
    c, ipc, fid = anonymous_pipe(server)
    c.grow_credits(256)
    cancel = pdu.header(pdu.CO_CANCEL, pdu.PFC_FIRST_FRAG | pdu.PFC_LAST_FRAG, pdu.HEADER_SIZE, 1)
    data = srvsvc_bind() + cancel * ((8 * MiB - 8192) // len(cancel))
    r, slowest, took, grew = probe(server, lambda: ipc.write(fid, data))
    assert slowest < STALL and grew < 64, f"slowest ECHO {slowest:.2f} s, took {took:.2f} s, peak RSS +{grew} MiB"
    # the association ends after a FAULT, as for any PDU it cannot take
    assert r.status == wire.STATUS_SUCCESS, r
    assert pdu.Header.parse(ipc.read(fid, 4280).body[16:]).ptype == pdu.FAULT
    assert ipc.write(fid, cancel).status == STATUS_PIPE_DISCONNECTED


def test_pipe_write_of_a_bind_and_many_small_pdus_is_served(fresh_servers):
    """A BIND and 4,000 CO_CANCELs in one WRITE (64 KiB) are taken, and the pipe answers."""
    from smbring.smb.rpc import pdu
    server = fresh_servers()
    c, ipc, fid = anonymous_pipe(server)
    cancel = pdu.header(pdu.CO_CANCEL, pdu.PFC_FIRST_FRAG | pdu.PFC_LAST_FRAG, pdu.HEADER_SIZE, 1)
    assert ipc.write(fid, srvsvc_bind() + cancel * 4000).status == wire.STATUS_SUCCESS
    assert pdu.Header.parse(ipc.read(fid, 4280).body[16:]).ptype == pdu.BIND_ACK


# -- security descriptors ------------------------------------------------------------------------
DACL_SECURITY_INFORMATION = 0x4
EVERYONE = bytes([1, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0])      # S-1-1-0


def descriptor_with_dacl_at_the_end(size: int) -> bytes:
    """A self-relative descriptor of `size` bytes whose DACL (as many ACEs as its 16-bit size
    allows) lies at its very end, after padding."""
    ace = struct.pack("<BBHI", 0, 0, 8 + len(EVERYONE), 0x1F01FF) + EVERYONE
    count = (65535 - 8) // len(ace)
    dacl = struct.pack("<BBHHH", 2, 0, 8 + count * len(ace), count, 0) + ace * count
    at = size - len(dacl)
    return struct.pack("<BBHIIII", 1, 0, 0x8004, 0, 0, 0, at).ljust(at, b"\0") + dacl   # DACL_PRESENT|SELF_RELATIVE


def test_set_info_with_a_large_descriptor(fresh_servers):
    """Each ACE of the DACL was read from a copy of the descriptor up to it: 3,000 copies of
    8 MiB stalled every client for 4 s."""
    server = fresh_servers()
    c, s = server.logon(timeout=120)
    rw = c.tree(s, "rw")
    fid = rw.open("sd.bin", wire.GENERIC_READ | wire.GENERIC_WRITE | 0x40000, wire.FILE_OVERWRITE_IF)   # WRITE_DAC
    c.grow_credits(256)
    sd = descriptor_with_dacl_at_the_end(8 * MiB - 4096)
    r, slowest, took, grew = probe(server, lambda: rw.set_info(fid, wire.INFO_SECURITY, 0, sd,
                                                               DACL_SECURITY_INFORMATION, payload=len(sd)))
    # (whether the file system stores a descriptor this large is its own affair; the answer
    # is an NTSTATUS either way)
    assert server.alive() and r.header.command == wire.SET_INFO, r
    assert slowest < STALL and grew < 64, f"slowest ECHO {slowest:.2f} s, took {took:.2f} s, peak RSS +{grew} MiB"


# -- 4. what a directory scan keeps ----------------------------------------------------------
LISTED_BOUND = {"max listed names per user": 100000}
FILE_NAMES_INFORMATION = 12


def directory_of(server, name: str, count: int) -> str:
    folder = server.path("rw") / name
    if not folder.exists():
        folder.mkdir()
        for i in range(count):
            (folder / f"{i:06d}").touch()
    return name


def names_in(body: bytes) -> list[str]:
    """The names of a FileNamesInformation QUERY_DIRECTORY response."""
    out, names = body[8:], []
    while out:
        next_offset, _index, length = struct.unpack_from("<III", out)
        names.append(out[12:12 + length].decode("utf-16-le"))
        out = out[next_offset:] if next_offset else b""
    return names


def scan(tree, fid: bytes, output_length: int = 65536, flags: int = 0) -> tuple[int, list[str]]:
    r = tree.query_directory(fid, "*", FILE_NAMES_INFORMATION, flags, output_length)
    return r.status, names_in(r.body) if r.status == wire.STATUS_SUCCESS else []


@pytest.fixture(scope="module")
def listing_bound(servers):
    return servers(LISTED_BOUND)


def test_scans_of_many_handles_on_a_large_directory_keep_a_bounded_memory(listing_bound):
    """Each handle that scanned a directory kept all its names until it closed (some 70
    bytes a name): 2,000 handles of one client on a directory of 30,000 names held 4.2 GB.
    The names kept are bounded per user (`max listed names per user`): here 100 handles, 3
    million names, would hold some 200 MB."""
    server = listing_bound
    c, s = server.logon(timeout=120)
    rw = c.tree(s, "rw")
    name = directory_of(server, "bound", 30000)
    before = server.proc_status("VmRSS")
    for _ in range(100):
        fid = rw.open(name, wire.GENERIC_READ, wire.FILE_OPEN, FILE_DIRECTORY_FILE)
        assert scan(rw, fid, 128)[0] == wire.STATUS_SUCCESS
    grown = (server.proc_status("VmRSS") - before) // 1024
    assert grown < 60, f"{grown} MiB kept for 100 scans"


def test_a_scan_whose_names_were_let_go_goes_on_where_it_was(listing_bound):
    """Handle A returns the first few names, then handles B and C scan the directory (their
    names take A's place within the bound); A goes on: every name once, in order, as if it
    had kept them. A name made meanwhile after where A was is listed too, one before it not."""
    server = listing_bound
    c, s = server.logon(timeout=120)
    rw = c.tree(s, "rw")
    name = directory_of(server, "resumed", 40000)
    every = sorted(p.name for p in (server.path("rw") / name).iterdir())
    a = rw.open(name, wire.GENERIC_READ, wire.FILE_OPEN, FILE_DIRECTORY_FILE)
    status, first = scan(rw, a, 256)
    assert status == wire.STATUS_SUCCESS and first[:2] == [".", ".."], first
    for _ in range(2):
        other = rw.open(name, wire.GENERIC_READ, wire.FILE_OPEN, FILE_DIRECTORY_FILE)
        assert scan(rw, other, 128)[0] == wire.STATUS_SUCCESS
    (server.path("rw") / name / "000000a").touch()        # before where A was
    (server.path("rw") / name / "zzz").touch()            # after
    seen = list(first)
    while True:
        status, more = scan(rw, a)
        if status == wire.STATUS_NO_MORE_FILES:
            break
        assert status == wire.STATUS_SUCCESS, hex(status)
        seen += more
    assert seen == [".", ".."] + every + ["zzz"]
    assert scan(rw, a, flags=0x1)[1][:3] == [".", "..", "000000"]      # RESTART_SCANS: anew
