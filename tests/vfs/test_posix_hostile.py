"""The posix VFS against what a share may hold besides files and directories (FIFOs, sockets,
device nodes, links to them) and against stream names aimed at the stream store: every open is
refused at once, never waits, and no path leaves a file's own stream directory."""
import errno
import fcntl
import os
import socket
import stat

import pytest

from smbring.vfs import posix
from smbring.vfs.posix import STREAM_ID_XATTR, STREAMS_DIR, PathError, PosixVFS, split_path, split_stream

FLAGS = {"read": os.O_RDONLY, "write": os.O_WRONLY, "read-write": os.O_RDWR,
         "read, non-blocking": os.O_RDONLY | os.O_NONBLOCK, "directory": os.O_RDONLY | os.O_DIRECTORY,
         # creating, not exclusively: whatever is there is opened, so it is checked (a FIFO
         # opened to write would wait for a reader)
         "create": os.O_CREAT | os.O_WRONLY}


@pytest.fixture
def share(tmp_path):
    root = tmp_path / "share"
    (root / "sub").mkdir(parents=True)
    (root / "file.txt").write_text("data")
    os.mkfifo(root / "fifo")
    os.mkfifo(root / "sub" / "fifo")
    os.symlink("fifo", root / "link-to-fifo")
    os.symlink("../fifo", root / "sub" / "link-up-to-fifo")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(root / "sock"))
    listener.listen()
    if os.geteuid() == 0:
        try:
            os.mknod(root / "chardev", 0o666 | stat.S_IFCHR, os.makedev(1, 3))      # like /dev/null
            os.mknod(root / "blockdev", 0o666 | stat.S_IFBLK, os.makedev(7, 200))   # a loop device
        except PermissionError:         # a container without CAP_MKNOD
            pass
    vfs = PosixVFS(str(root))
    yield root, vfs
    for fifo in (root / "fifo", root / "sub" / "fifo"):     # frees an open a regression left waiting
        os.close(os.open(fifo, os.O_RDWR | os.O_NONBLOCK))
    vfs.close()
    listener.close()


SPECIAL = ["fifo", "sub/fifo", "link-to-fifo", "sub/link-up-to-fifo", "sock", "chardev", "blockdev"]


@pytest.mark.parametrize("how", FLAGS)
@pytest.mark.parametrize("name", SPECIAL)
def test_special_files_are_refused_at_once(share, name, how, promptly):
    root, vfs = share
    if not os.path.lexists(root / name):
        pytest.skip("device nodes need root (CAP_MKNOD)")
    fds_before = set(os.listdir("/proc/self/fd"))
    result = promptly(lambda: vfs.open(name.split("/"), FLAGS[how]))
    assert result != "hung", "the open waited"
    assert isinstance(result, OSError), f"opened: {result}"
    if how == "directory":
        assert result.errno == errno.ENOTDIR
    else:
        assert isinstance(result, posix.NotAFile) and result.errno == errno.EACCES
    assert set(os.listdir("/proc/self/fd")) <= fds_before         # nothing left open


def test_special_files_can_still_be_listed_and_stated(share, promptly):
    """A listing shows them, as Samba's does; nothing about them needs an open."""
    root, vfs = share
    fd = vfs.open([], os.O_RDONLY | os.O_DIRECTORY)
    try:
        names = promptly(lambda: PosixVFS.names(fd))
        assert {"fifo", "sock", "link-to-fifo"} <= set(names)
        for name in names:
            st = promptly(lambda: vfs.entry_stat(fd, [], name))
            assert st.st_ino == os.stat(name, dir_fd=fd).st_ino     # (a link: its target's)
            assert promptly(lambda: vfs.get_dos_at(fd, name)) is None
    finally:
        os.close(fd)
    assert stat.S_ISFIFO(promptly(lambda: vfs.stat(["link-to-fifo"])).st_mode)


@pytest.mark.parametrize("name", ["fifo", "link-to-fifo", "sock"])
def test_metadata_lookups_do_not_wait_on_special_files(share, name, promptly):
    _root, vfs = share
    assert promptly(lambda: vfs.stream_id([name], create=True)) is None
    from smbring.smb.commands.create import stored_sd
    assert promptly(lambda: stored_sd(vfs, [name])) is None


def test_files_and_directories_open_with_the_flags_asked_for(share):
    _root, vfs = share
    for parts, flags in [(["file.txt"], os.O_RDWR), (["file.txt"], os.O_WRONLY | os.O_APPEND),
                         (["sub"], os.O_RDONLY | os.O_DIRECTORY), ([], os.O_RDONLY)]:
        fd = vfs.open(parts, flags)
        try:
            status = fcntl.fcntl(fd, fcntl.F_GETFL)
            assert not status & os.O_NONBLOCK           # io_uring would get EAGAIN otherwise
            assert status & os.O_APPEND == flags & os.O_APPEND
            assert os.get_inheritable(fd) is False
        finally:
            os.close(fd)
    fd = vfs.open(["file.txt"], os.O_RDONLY | os.O_NONBLOCK)     # asked for: kept
    try:
        assert fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK
    finally:
        os.close(fd)
    fd = vfs.open(["new.txt"], os.O_CREAT | os.O_EXCL | os.O_RDWR)
    try:
        status = fcntl.fcntl(fd, fcntl.F_GETFL)
        assert not status & os.O_NONBLOCK and status & os.O_ACCMODE == os.O_RDWR
        assert os.get_inheritable(fd) is False
    finally:
        os.close(fd)
    for parts, flags in [(["file.txt"], os.O_RDONLY), (["sub"], os.O_RDONLY | os.O_DIRECTORY),
                         (["new2.txt"], os.O_CREAT | os.O_EXCL | os.O_WRONLY)]:
        fd, st = vfs.open_stat(parts, flags)        # the stat is the descriptor's
        try:
            assert (st.st_dev, st.st_ino) == (os.fstat(fd).st_dev, os.fstat(fd).st_ino)
            assert not fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK
        finally:
            os.close(fd)


@pytest.mark.parametrize("name", SPECIAL + ["link-out", "dangling-link-out"])
def test_an_exclusive_create_opens_nothing_that_is_there(share, tmp_path, name, promptly):
    """O_CREAT | O_EXCL (opened without a type check, as it can only make a new regular file)
    fails at once on anything there, a link included, and makes nothing where a link points."""
    root, vfs = share
    (tmp_path / "outside").mkdir()
    os.symlink(tmp_path / "outside" / "made", root / "dangling-link-out")
    os.symlink(tmp_path / "outside", root / "link-out")
    if not os.path.lexists(root / name):
        pytest.skip("device nodes need root (CAP_MKNOD)")
    fds_before = set(os.listdir("/proc/self/fd"))
    result = promptly(lambda: vfs.open(name.split("/"), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    assert result != "hung", "the open waited"
    assert isinstance(result, FileExistsError), f"opened: {result}"
    assert set(os.listdir("/proc/self/fd")) <= fds_before
    assert os.listdir(tmp_path / "outside") == []


def test_directory_opens_stay_beneath_the_root(share, tmp_path):
    """O_DIRECTORY opens (no type check needed) resolve beneath the root as every open does."""
    root, vfs = share
    (tmp_path / "outside").mkdir()
    os.symlink(tmp_path / "outside", root / "out")
    os.symlink("../..", root / "sub" / "up2")
    for parts in (["out"], ["sub", "up2"]):
        for call in (vfs.open, vfs.open_stat):
            with pytest.raises(OSError) as e:
                call(parts, os.O_RDONLY | os.O_DIRECTORY)
            assert e.value.errno in (errno.EXDEV, errno.ELOOP)
    fd = vfs.open(["sub"], os.O_RDONLY | os.O_DIRECTORY)     # a directory inside: opened
    os.close(fd)


# -- names that differ in case only

def _first_spelled_alike(entries: list[str], name: str) -> str | None:
    """What a lookup of `name` then a scan of the directory finds (the walk's rule)."""
    if name in entries:
        return name
    return next((e for e in entries if e.casefold() == name.casefold()), None)


TRICKY = ["ß", "SS", "ss", "ﬀ", "FF", "İ", "i̇", "ς", "Σ", "σ", "ǅ", "ǆ", "K", "k", "Å", "å",
          "a", "A", "straße", "STRASSE", "ﬁle", "FILE", "e\u0301", "é", "x" * 255]


def test_case_matching_finds_what_a_scan_would_whatever_folding_does_to_lengths():
    import random
    rng = random.Random(7)
    for _ in range(2000):
        entries = rng.sample(TRICKY, rng.randint(0, len(TRICKY)))
        name = rng.choice(TRICKY)
        assert posix._same_but_case(entries, name) == _first_spelled_alike(entries, name), (entries, name)


def test_case_matching_never_matches_a_name_across_entries():
    assert posix._same_but_case(["a", "b"], "a\0b") is None
    assert posix._same_but_case(["a", "b"], "A") == "a"
    assert posix._same_but_case([], "a") is None


def test_case_matching_looks_in_the_parent_and_never_leaves_the_share(share, tmp_path):
    root, vfs = share
    (root / "sub" / "File.Txt").write_text("x")
    (root / "Dir").mkdir()
    (root / "Dir" / "Inner").write_text("x")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.txt").write_text("x")
    os.symlink(tmp_path / "outside", root / "out")
    assert vfs.match_case(["sub", "FILE.TXT"]) == ["sub", "File.Txt"]
    assert vfs.match_case(["sub", "new.txt"]) == ["sub", "new.txt"]
    assert vfs.match_case(["DIR", "INNER"]) == ["Dir", "Inner"]          # the walk, from the root
    assert vfs.match_case(["out", "SECRET.TXT"]) == ["out", "SECRET.TXT"]
    assert vfs.match_case(["file.txt", "X"]) == ["file.txt", "X"]       # below a file: as given


def test_read_names_lists_what_listdir_does(tmp_path):
    """read_names (getdents64 on the descriptor itself): every name of a directory larger
    than one read of its buffer, names that are no UTF-8 as os.listdir decodes them, never
    "." nor ".."; a descriptor of a file is refused as listdir refuses it."""
    from smbring._dirent import read_names
    d = tmp_path / "many"
    d.mkdir()
    for i in range(3000):        # 3000 entries of ~40 bytes: several getdents64 reads
        (d / f"entry-{i:05d}-{'x' * 16}").touch()
    (d / "ÄÖ.txt").touch()
    os.close(os.open(os.path.join(os.fsencode(d), b"bad-\xff-name"), os.O_CREAT | os.O_WRONLY))
    (d / "..dots").touch()
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        names = read_names(fd)
    finally:
        os.close(fd)
    assert len(names) == len(set(names)) == 3003
    assert sorted(names) == sorted(os.listdir(d))
    fd = os.open(d / "..dots", os.O_RDONLY)
    try:
        with pytest.raises(NotADirectoryError):
            read_names(fd)
    finally:
        os.close(fd)


def test_a_file_swapped_for_a_fifo_is_refused(share, promptly):
    """Whatever the caller saw before (a file), the open itself checks what it got."""
    root, vfs = share
    assert stat.S_ISREG(vfs.stat(["file.txt"]).st_mode)
    os.unlink(root / "file.txt")
    os.mkfifo(root / "file.txt")
    try:
        assert isinstance(promptly(lambda: vfs.open(["file.txt"], os.O_RDONLY)), posix.NotAFile)
    finally:
        os.close(os.open(root / "file.txt", os.O_RDWR | os.O_NONBLOCK))


# -- stream names

@pytest.mark.parametrize("name", [
    "file.txt:..", "file.txt:.", "file.txt:..:$DATA", "file.txt:.:$DATA", "file.txt:.:$data",
    "sub\\file.txt:..", ":..", ":.:$DATA",
    "file.txt:a/b", "file.txt:../x", "file.txt:a\0b", "file.txt:\0", "file.txt:a\\b", "file.txt:a\x01:b",
    "file.txt:s:",
    "file.txt:x:$INDEX_ALLOCATION", "file.txt:x:$DATA:more", "file.txt:" + "s" * 256,
])
def test_stream_names_that_leave_the_files_stream_directory_are_invalid(name):
    with pytest.raises(PathError) as refused:
        base, _stream = split_stream(name)
        split_path(base)
    assert refused.value.kind == "invalid"


@pytest.mark.parametrize("name", [
    STREAMS_DIR, STREAMS_DIR.upper(), ".Smbring-Streams", STREAMS_DIR + "\\0123456789abcdef",
    STREAMS_DIR + ":x", "sub\\" + STREAMS_DIR.upper(), ".\u017fmbring-streams",   # long s: folds to s
])
def test_the_stream_store_cannot_be_named(name):
    with pytest.raises(PathError):
        base, _stream = split_stream(name)
        split_path(base)


@pytest.mark.parametrize("name, expected", [
    ("file.txt:Zone.Identifier:$DATA", ("file.txt", "Zone.Identifier")),
    ("file.txt:...", ("file.txt", "...")),
    ("file.txt:..x", ("file.txt", "..x")),
    ("file.txt:.x:$data", ("file.txt", ".x")),
    ("sub\\file.txt: spaced ", ("sub\\file.txt", " spaced ")),
    ("file.txt:é★", ("file.txt", "é★")),
    ("file.txt::$DATA", ("file.txt", None)),
])
def test_ordinary_stream_names_still_work(name, expected):
    assert split_stream(name) == expected


@pytest.mark.parametrize("name", ["a\x01", "\x05Stream\n One", "\x1f", "x\x01\x02y"])
def test_a_stream_name_s_control_characters_never_reach_a_depot_file_name(name):
    """NTFS allows 0x01-0x1F in a stream name (smbd too): the name is valid, and its depot
    file spells each as ":" and two hex digits (a ":" is in no stream name), read back as the
    name; a depot entry spelled otherwise with a ":" is no stream's."""
    assert split_stream("file.txt:" + name) == ("file.txt", name)
    entry = PosixVFS.stream_parts("0123456789abcdef", name)[-1]
    assert not set(entry) & {chr(c) for c in range(32)} and "/" not in entry
    assert posix.stream_name(entry) == name
    for planted in (entry + ":", entry.replace(":", ":z", 1), entry + ":20", entry + ":00"):
        assert posix.stream_name(planted) is None


def test_a_stream_name_too_long_once_spelled_out_is_invalid():
    with pytest.raises(PathError):
        PosixVFS.stream_parts("0123456789abcdef", "\x01" * 100)


@pytest.mark.parametrize("sid", ["..", ".", "", "../0123456789ab", "0123456789ABCDEF", "0123456789abcde",
                                 "0123456789abcdef0", "0123456789abcdeg", "01234567/9abcdef"])
def test_stream_paths_need_a_stream_id_of_ours(sid):
    with pytest.raises(PathError):
        PosixVFS.stream_parts(sid)
    with pytest.raises(PathError):
        PosixVFS.stream_parts(sid, "s")


@pytest.mark.parametrize("stream", ["", ".", "..", "a/b", "a\\b", "a:b", "a\0"])
def test_stream_paths_need_a_plain_stream_name(stream):
    with pytest.raises(PathError):
        PosixVFS.stream_parts("0123456789abcdef", stream)
    assert PosixVFS.stream_parts("0123456789abcdef", "ok") == [STREAMS_DIR, "0123456789abcdef", "ok"]


@pytest.mark.parametrize("planted", [b"..", b".", b"../../sub", b"0123456789abcdef/..", b"\xff" * 16, b""])
def test_a_planted_stream_id_is_not_followed(share, planted):
    """Someone with local access may set the xattr; the server takes it for no id at all."""
    root, vfs = share
    os.setxattr(root / "file.txt", STREAM_ID_XATTR, planted)
    assert vfs.stream_id(["file.txt"]) is None
    sid = vfs.stream_id(["file.txt"], create=True)
    assert posix.valid_stream_id(sid)
    assert os.getxattr(root / "file.txt", STREAM_ID_XATTR) == sid.encode()
    assert vfs.stream_id(["file.txt"]) == sid


def test_a_store_entry_no_client_could_make_is_left_alone(share):
    root, vfs = share
    sid = vfs.stream_id(["file.txt"], create=True)
    vfs.make_stream_dir(sid)
    (root / STREAMS_DIR / sid / "a:b").write_text("x")     # made locally, not through SMB
    (root / STREAMS_DIR / sid / "ok").write_text("x")
    vfs.remove_streams(sid)
    assert os.listdir(root / STREAMS_DIR / sid) == ["a:b"]


def test_a_stat_in_the_root_follows_links_only_beneath_it(share, tmp_path):
    """One name in the root is looked up without following it; a link there is still
    resolved beneath the root (refused where it leads out), as a longer path is."""
    root, vfs = share
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "f").write_text("outside")
    os.symlink(tmp_path / "outside", root / "out")
    os.symlink(tmp_path / "outside" / "f", root / "out-file")
    os.symlink("../share/file.txt", root / "in-by-the-way-out")
    os.symlink("file.txt", root / "in")
    for name in ("out", "out-file", "in-by-the-way-out"):
        with pytest.raises(OSError) as e:
            vfs.stat([name])
        assert e.value.errno in (errno.EXDEV, errno.ELOOP)
    assert vfs.stat(["in"]).st_ino == os.stat(root / "file.txt").st_ino
    assert vfs.stat(["file.txt"]).st_ino == os.stat(root / "file.txt").st_ino
    assert vfs.stat([]).st_ino == os.stat(root).st_ino
    assert stat.S_ISFIFO(vfs.stat(["fifo"]).st_mode)
    with pytest.raises(FileNotFoundError):
        vfs.stat(["missing"])


def test_links_into_the_stream_depot_reach_and_make_nothing(share):
    """A link a local user made into the depot (to it, to a directory of it, dangling to a
    name in it) is refused for every lookup, and no file is made through it; links elsewhere
    in the share still work (tests/security/test_share_rules_review.py tries it through SMB)."""
    root, vfs = share
    sid = "0123456789abcdef"
    (root / STREAMS_DIR / sid).mkdir(parents=True)
    (root / STREAMS_DIR / sid / "s").write_text("stream")
    os.symlink(STREAMS_DIR, root / "depot")
    os.symlink(f"{STREAMS_DIR}/{sid}", root / "id")
    os.symlink(f"{STREAMS_DIR}/{sid}/new", root / "dangling")
    os.symlink("file.txt", root / "in")
    for parts in (["depot", sid, "s"], ["id", "s"], ["id"], ["depot"]):
        for flags in (os.O_RDONLY, os.O_PATH):
            with pytest.raises(PermissionError):
                os.close(vfs.open(parts, flags))
    for parts in (["id", "new"], ["dangling"], ["depot", sid, "new"]):
        with pytest.raises(PermissionError):
            os.close(vfs.open(parts, os.O_RDWR | os.O_CREAT))
    with pytest.raises(PermissionError):
        vfs.rename(["file.txt"], ["id", "moved"], False)
    assert sorted(os.listdir(root / STREAMS_DIR / sid)) == ["s"]
    os.close(vfs.open(["in"], os.O_RDONLY))
    os.close(vfs.open(["in"], os.O_RDWR | os.O_CREAT))


def test_a_name_is_removed_only_while_it_leads_to_the_file(share):
    """remove(key=...), a handle's delete on close: the name goes where it is the file, or a
    symlink inside the share leading to it (the name the file was opened through), the link
    and never its target; a name that leads elsewhere is left, and so is what it leads to."""
    root, vfs = share
    (root / "real.txt").write_text("precious")
    (root / "other.txt").write_text("other")
    st = os.stat(root / "real.txt")
    key = (st.st_dev, st.st_ino)
    os.symlink("real.txt", root / "alias")
    os.symlink("other.txt", root / "elsewhere")
    os.symlink("../outside", root / "out")
    for name in ("elsewhere", "other.txt", "out", "sub"):
        with pytest.raises(FileNotFoundError):
            vfs.remove([name], name == "sub", key=key)
        assert os.path.lexists(root / name)
    vfs.remove(["alias"], False, key=key)
    assert not os.path.lexists(root / "alias")
    assert (root / "real.txt").read_text() == "precious"
    vfs.remove(["real.txt"], False, key=key)
    assert not os.path.lexists(root / "real.txt")


def test_an_id_on_a_deleted_files_inode_number_reaches_none_of_its_streams(share):
    """A stream directory records its file's inode generation beside device and inode (where
    the file system keeps one): a file made on the inode number of a deleted one, given the
    deleted file's id by a local user who could read it, gets none of its streams. (The reuse
    of the number is played by recording the second file's device and inode with the first's
    generation, as the deleted file's would read.)"""
    root, vfs = share
    sid = vfs.stream_id(["file.txt"], create=True)
    vfs.make_stream_dir(sid)
    depot_dir = root / STREAMS_DIR / sid
    recorded = posix.FileMark.parse(os.getxattr(depot_dir, posix.STREAM_BASE_XATTR))
    fd = os.open(root / "file.txt", os.O_RDONLY)
    try:
        mine = posix.file_mark(fd, os.fstat(fd))
    finally:
        os.close(fd)
    if mine.generation is None:
        pytest.skip("this file system keeps no inode generations")
    assert recorded == mine
    (root / "copier.txt").write_text("local")
    fd = os.open(root / "copier.txt", os.O_RDONLY)
    try:
        theirs = posix.file_mark(fd, os.fstat(fd))
    finally:
        os.close(fd)
    os.setxattr(root / "copier.txt", STREAM_ID_XATTR, sid.encode())
    reused = posix.FileMark(theirs.st_dev, theirs.st_ino, (theirs.generation + 1) & 0xFFFFFFFF)
    os.setxattr(depot_dir, posix.STREAM_BASE_XATTR, reused.record())
    assert vfs.stream_id(["copier.txt"]) is None
    # the same inode and generation is the file's own; a record without a generation (an
    # older version's) still is, and gets the generation
    os.setxattr(depot_dir, posix.STREAM_BASE_XATTR, theirs.record())
    assert vfs.stream_id(["copier.txt"]) == sid
    os.setxattr(depot_dir, posix.STREAM_BASE_XATTR, f"{theirs.st_dev}:{theirs.st_ino}".encode())
    assert vfs.stream_id(["copier.txt"]) == sid
    assert os.getxattr(depot_dir, posix.STREAM_BASE_XATTR) == theirs.record()
