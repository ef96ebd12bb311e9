"""smbring.client's compounds (related requests sent in one frame): a stat is one round trip
(CREATE and CLOSE), a small file of a tree one (CREATE, READ and CLOSE), against
`smbring serve` and Samba's smbd, plain, signed and sealed; and servers that lie in a
compounded answer (a NextCommand off the grid or past the frame, a chain answering a
request sent alone, a signature altered in the chain's second answer, a listing that
understates a file) are refused with ProtocolError or fetched whole."""
import asyncio
import os
import struct

import pytest

import smbring.client as sc
from smbring.smb import wire

PROTECTIONS = {"plain": {}, "signed": {"sign": True}, "sealed": {"encrypt": True}}


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 120))


async def connected(srv, port=None, **kw):
    return await sc.connect(srv["host"], port or srv["port"], srv["user"], srv["password"], srv["name"], **kw)


def command(frame) -> int:
    return struct.unpack_from("<H", frame, 12)[0] if frame[:4] == wire.PROTOCOL_ID else -1


def starts_of(frame) -> list[int]:
    """Where each message of a frame starts (several: a compound)."""
    found, start = [], 0
    while True:
        found.append(start)
        step = struct.unpack_from("<I", frame, start + 20)[0]
        if not step:
            return found
        start += step


def commands_in(frame) -> list[int]:
    """The commands of a frame's requests (several: a compound)."""
    return [command(frame[start:]) for start in starts_of(frame)]


def make_tree(share):
    (share / "tree" / "sub").mkdir(parents=True)
    files = {f"sub/f{i:02d}" if i % 2 else f"f{i:02d}": os.urandom(i * 301) for i in range(40)}
    for rel, data in files.items():
        (share / "tree" / rel).write_bytes(data)
    return files


@pytest.mark.parametrize("protection", PROTECTIONS)
@pytest.mark.parametrize("server", ["smbring", "smbd"])
def test_stat_and_a_tree_of_small_files_are_answered_whole(request, tmp_path, server, protection):
    """Against both servers, with each protection: a stat, a stat of a missing file (the
    CREATE's failure, not the CLOSE's) and a tree of small files (an empty one among them)
    fetched, then put back under another name, byte-exact."""
    srv = request.getfixturevalue("smbring_server")() if server == "smbring" else \
        request.getfixturevalue("samba_server")()
    files = make_tree(srv["share"])

    async def go():
        async with await connected(srv, **PROTECTIONS[protection]) as c:
            assert (await c.stat("tree\\f02")).size == 602
            assert (await c.stat("tree")).is_dir
            with pytest.raises(FileNotFoundError, match="missing"):
                await c.stat("tree\\missing")
            with pytest.raises(FileNotFoundError, match="missing"):      # (a listing's CREATE)
                [e async for e in c.listdir("tree\\missing")]
            with pytest.raises(NotADirectoryError):
                [e async for e in c.listdir("tree\\f02")]
            await c.mkdir("tree\\empty")
            assert [e async for e in c.listdir("tree\\empty")] == []
            await c.rmdir("tree\\empty")
            await c.get("tree", str(tmp_path / "back"))
            await c.put(str(tmp_path / "back"), "again")
            # a request between the CREATE and the CLOSE that fails: its failure raised, and
            # the CLOSE made all the same (else the handle left open, denying DELETE to
            # others, would stop what follows)
            with pytest.raises(FileExistsError):
                await c.mkdir("tree\\sub")
            with pytest.raises(OSError, match="not empty|NOT_EMPTY"):
                await c.rmdir("tree\\sub")
            with pytest.raises(FileExistsError):
                await c.rename("tree\\f02", "tree\\f04")
            with pytest.raises(FileNotFoundError):
                await c.remove("tree\\missing")
            for rel in files:
                if rel.startswith("sub/"):
                    await c.remove("tree\\" + rel.replace("/", "\\"))
            await c.rmdir("tree\\sub")
            await c.rename("tree\\f02", "tree\\f04", replace=True)
            assert (await c.stat("tree\\f04")).size == 602
    run(go())
    for rel, data in files.items():
        assert (tmp_path / "back" / rel).read_bytes() == data
        assert (srv["share"] / "again" / rel).read_bytes() == data
    assert not (srv["share"] / "tree" / "sub").exists()
    assert not (srv["share"] / "tree" / "f02").exists()


def test_each_small_file_is_one_round_trip(smbring_server, tampering_proxy, tmp_path):
    """Counted at a proxy: a stat sends one frame, a tree's small files one each both ways
    (a CREATE, a READ or a WRITE, and a CLOSE in it), not two and three or four."""
    srv = smbring_server()
    files = make_tree(srv["share"])
    frames = []

    def intercept(frame):
        frames.append(commands_in(frame))
        return frame

    async def go():
        async with tampering_proxy(srv["port"], lambda f: f, intercept) as proxy:
            async with await connected(srv, proxy.port) as c:
                frames.clear()
                await c.stat("tree\\f02")
                stat_frames = len(frames)
                frames.clear()
                await c.get("tree\\f02", str(tmp_path / "one"))      # a stat, then the file
                assert frames == [[wire.CREATE, wire.CLOSE], [wire.CREATE, wire.READ, wire.CLOSE]]
                assert (tmp_path / "one").read_bytes() == files["f02"]
                frames.clear()
                await c.get("tree", str(tmp_path / "back"))
                got = list(frames)
                frames.clear()
                await c.put(str(tmp_path / "back"), "again")
                return stat_frames, got
    stat_frames, got = run(go())
    assert stat_frames == 1
    # each directory's listing: its first batch in its CREATE's frame (the tree and "sub")
    assert got.count([wire.CREATE, wire.QUERY_DIRECTORY]) == 2
    assert [wire.CREATE] not in got
    assert got.count([wire.CREATE, wire.READ, wire.CLOSE]) == len(files)
    assert not any(wire.READ in f for f in got if f != [wire.CREATE, wire.READ, wire.CLOSE])
    # (the empty file: a CREATE and a CLOSE; so are the stat that finds the target absent
    # and the two directories made; the rename into place is a CREATE, a SET_INFO and a CLOSE)
    assert frames.count([wire.CREATE, wire.WRITE, wire.CLOSE]) == len(files) - 1
    assert frames.count([wire.CREATE, wire.CLOSE]) == 4
    assert frames.count([wire.CREATE, wire.SET_INFO, wire.CLOSE]) == 1
    assert [f for f in frames if len(f) == 1] == [[wire.TREE_DISCONNECT], [wire.LOGOFF]]   # (the close)
    assert len(frames) == (len(files) - 1) + 4 + 1 + 2
    assert not any(wire.WRITE in f for f in frames if f != [wire.CREATE, wire.WRITE, wire.CLOSE])


class OneCreditWindow:
    """A proxy's tamper that keeps the client's credit window at one: each answer grants
    none while the client holds more than one, then what keeps it at one. `held`: the
    client's credits (its first, for the NEGOTIATE, and those granted since, less those of
    the requests answered). A signed answer is left as it is (its signature covers it); with
    `keep_logon`, the logon's answers too (the 3.1.1 keys are derived over them)."""

    def __init__(self, keep_logon: bool):
        self.held, self.keep_logon = 1, keep_logon

    def tamper(self, frame):
        charge, flags = max(1, struct.unpack_from("<H", frame, 6)[0]), struct.unpack_from("<I", frame, 16)[0]
        interim = flags & wire.FLAGS_ASYNC and struct.unpack_from("<I", frame, 8)[0] == wire.STATUS_PENDING
        left = self.held - (0 if interim else charge)
        if not flags & wire.FLAGS_SIGNED and not (
                self.keep_logon and command(frame) in (wire.NEGOTIATE, wire.SESSION_SETUP)):
            struct.pack_into("<H", frame, 14, max(0, 1 - left))
        self.held = left + struct.unpack_from("<H", frame, 14)[0]
        return frame


def test_a_server_granting_one_credit_at_a_time_gets_the_requests_one_by_one(smbring_server,
                                                                               tampering_proxy, tmp_path):
    """A server whose every answer grants one credit keeps the client's window at one: no
    compound fits, so each goes as its requests one at a time (the later ones naming the
    file the CREATE opened), and every operation still works: a stat, a missing file's stat,
    a tree got and put back, mkdir, rename, remove, rmdir, a listing. Before, the compound
    refused the server ("granted too few credits")."""
    srv = smbring_server()
    files = make_tree(srv["share"])
    frames = []
    window = OneCreditWindow(keep_logon=True)

    def intercept(frame):
        frames.append(commands_in(frame))
        return frame

    async def go():
        async with tampering_proxy(srv["port"], window.tamper, intercept) as proxy:
            async with await connected(srv, proxy.port) as c:
                while window.held > 1:      # the credits of the logon spent
                    await c.stat("tree")
                frames.clear()
                assert (await c.stat("tree\\f02")).size == len(files["f02"])
                with pytest.raises(FileNotFoundError):
                    await c.stat("tree\\missing")
                await c.get("tree", str(tmp_path / "back"))
                await c.put(str(tmp_path / "back"), "again")
                await c.mkdir("made")
                await c.rename("made", "renamed")
                await c.rmdir("renamed")
                await c.remove("again\\f02")
                with pytest.raises(FileNotFoundError):
                    await c.remove("again\\f02")
                names = {e.name async for e in c.listdir("again")}
        return names
    names = run(go())
    assert window.held == 1
    assert all(len(f) == 1 for f in frames), [f for f in frames if len(f) > 1]
    assert frames.count([wire.READ]) == len(files)
    assert frames.count([wire.WRITE]) == len(files) - 1     # (the empty file: none)
    for rel, data in files.items():
        expected = srv["share"] / "again" / rel
        assert rel == "f02" or expected.read_bytes() == data
    assert not (srv["share"] / "again" / "f02").exists()
    assert not (srv["share"] / "renamed").exists()
    assert names == {n for n in os.listdir(srv["share"] / "again")}


def test_a_server_holding_the_window_at_one_credit_gets_reads_and_writes_that_fit(smbring_server,
                                                                                    tampering_proxy, tmp_path):
    """A server that grants one credit at a time from its first answer on (SMB 2.1, where
    the logon's answers carry nothing the keys depend on): the client's READs and WRITEs are
    lowered to 64 KiB, what one credit covers, and a file of 3 MiB goes both ways byte-exact.
    Before, its 1 MiB READs were refused ('granted too few credits: 1 held, 16 needed')."""
    srv = smbring_server()
    data = os.urandom(3 * 1024 * 1024 + 5)
    (srv["share"] / "big").write_bytes(data)
    window = OneCreditWindow(keep_logon=False)

    async def go():
        async with tampering_proxy(srv["port"], window.tamper) as proxy:
            async with await connected(srv, proxy.port, dialects=(wire.SMB210,)) as c:
                assert (c.read_size, c.write_size, c.io_size) == (65536,) * 3
                await c.get("big", str(tmp_path / "got"))
                await c.put(str(tmp_path / "got"), "back")
    run(go())
    assert window.held == 1
    assert (tmp_path / "got").read_bytes() == data
    assert (srv["share"] / "back").read_bytes() == data


def misaligned(frame):
    struct.pack_into("<I", frame, 20, struct.unpack_from("<I", frame, 20)[0] + 4)
    return frame


def past_the_end(frame):
    struct.pack_into("<I", frame, 20, len(frame) + 8)
    return frame


def chained_alone(frame):
    """A lone CREATE's answer, followed by a copy of itself as a compound's next answer."""
    first = bytearray(frame) + bytes(-len(frame) % 8)
    struct.pack_into("<I", first, 20, len(first))
    return first + frame


@pytest.mark.parametrize("lie, call, message", [
    (misaligned, "stat", "NextCommand .* does not lead to the next response"),
    (past_the_end, "stat", "NextCommand .* does not lead to the next response"),
    (chained_alone, "open", "compounded response to a request that was not compounded"),
])
def test_a_compounded_answer_that_does_not_hold_together_is_refused(smbring_server, tampering_proxy,
                                                                     lie, call, message):
    srv = smbring_server()
    (srv["share"] / "f").write_bytes(b"x" * 10)

    def tamper(frame):
        return lie(frame) if command(frame) == wire.CREATE else frame

    async def go():
        async with tampering_proxy(srv["port"], tamper, whole_frames=True) as proxy:
            c = await connected(srv, proxy.port)
            try:
                with pytest.raises(sc.ProtocolError, match=message):
                    await (c.stat("f") if call == "stat" else c.open("f"))
                assert not c.connected          # nothing more is asked of that server
            finally:
                await c.close()
    run(go())


def test_an_altered_second_answer_of_a_signed_compound_is_refused(smbring_server, tampering_proxy):
    """Each answer of a signed compound carries its own signature: the CLOSE's, altered
    (its attributes changed after the server signed them), is refused."""
    srv = smbring_server()
    (srv["share"] / "f").write_bytes(b"x" * 10)

    def tamper(frame):
        step = struct.unpack_from("<I", frame, 20)[0]
        if command(frame) == wire.CREATE and step:
            frame[step + 64 + 56] ^= 0x20           # the CLOSE's FileAttributes
        return frame

    async def go():
        async with tampering_proxy(srv["port"], tamper, whole_frames=True) as proxy:
            c = await connected(srv, proxy.port, sign=True)
            try:
                with pytest.raises(sc.ProtocolError, match="bad signature on the CLOSE response"):
                    await c.stat("f")
            finally:
                await c.close()
    run(go())


def test_a_file_the_listing_understates_is_fetched_whole(smbring_server, tampering_proxy, tmp_path):
    """A listing that says 100 bytes of a file of 50,000 (grown since, or a lie): the one
    READ sent with the CREATE holds 100 bytes, the CREATE says 50,000, and the file is
    fetched whole the usual way."""
    srv = smbring_server()
    (srv["share"] / "tree").mkdir()
    data = os.urandom(50_000)
    (srv["share"] / "tree" / "grown").write_bytes(data)

    def tamper(frame):
        if command(frame) == wire.QUERY_DIRECTORY and struct.unpack_from("<I", frame, 8)[0] == 0:
            at = frame.find("grown".encode("utf-16-le"))
            if at > 0:
                struct.pack_into("<Q", frame, at - 104 + 40, 100)     # EndOfFile of its entry
        return frame

    async def go():
        async with tampering_proxy(srv["port"], tamper) as proxy:
            async with await connected(srv, proxy.port) as c:
                await c.get("tree", str(tmp_path / "back"))
    run(go())
    assert (tmp_path / "back" / "grown").read_bytes() == data


def fewer_written(frame):
    """A compound's WRITE answer says one byte fewer than it was sent."""
    for start in starts_of(frame):
        if command(frame[start:]) == wire.WRITE and struct.unpack_from("<I", frame, start + 8)[0] == 0:
            struct.pack_into("<I", frame, start + 64 + 4, struct.unpack_from("<I", frame, start + 64 + 4)[0] - 1)
    return frame


def larger_at_close(frame):
    """A compound's CLOSE answer reports the file one byte larger than it is."""
    for start in starts_of(frame):
        if command(frame[start:]) == wire.CLOSE and struct.unpack_from("<I", frame, start + 8)[0] == 0:
            struct.pack_into("<Q", frame, start + 64 + 48, struct.unpack_from("<Q", frame, start + 64 + 48)[0] + 1)
    return frame


@pytest.mark.parametrize("lie, message", [(fewer_written, "the server says it wrote 999"),
                                          (larger_at_close, "1001 bytes on the server after writing 1000")])
def test_a_small_upload_the_server_misreports_fails_and_leaves_no_name(smbring_server, tampering_proxy,
                                                                      tmp_path, lie, message):
    srv = smbring_server()
    src = tmp_path / "src"
    src.write_bytes(os.urandom(1000))

    async def go():
        async with tampering_proxy(srv["port"], lie) as proxy:
            c = await connected(srv, proxy.port)
            try:
                with pytest.raises(sc.ProtocolError, match=message):
                    await c.put(str(src), "uploaded")
            finally:
                await c.close()
    run(go())
    assert os.listdir(srv["share"]) == []
