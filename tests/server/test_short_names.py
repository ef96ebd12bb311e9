"""8.3 short names reach the long names they stand for (as on Windows and smbd): a file, a
directory on the way, a delete; never a name `veto files` hides, never over a file that holds
the short name itself. Samba's smbclient against `smbring serve --config`.

Every test but the veto one fails on a server that only lists short names (the name as sent
is then not found)."""
from smbring.vfs.short_names import short_name

from smbconf_server import smbconf  # noqa: F401  (the fixture)

LONG = "quarterly report of the team.text"
DIRECTORY = "project documents archive"


def started(smbconf, share_options: str = ""):
    server = smbconf("", {"share": f"read only = no\n{share_options}"})
    return server, server.root / "share"


def test_a_file_is_read_and_deleted_through_its_short_name(smbconf, tmp_path):
    server, share = started(smbconf)
    (share / LONG).write_bytes(b"the long file's data\n")
    short = short_name(LONG)
    assert "~" in short
    listed = server.smbclient("share", "allinfo \"" + LONG + "\"")
    assert f"altname: {short}" in listed.stdout, listed.stdout
    got = server.smbclient("share", f"get {short} {tmp_path / 'got'}")
    assert got.returncode == 0, got.stdout + got.stderr
    assert (tmp_path / "got").read_bytes() == b"the long file's data\n"
    lower = server.smbclient("share", f"get {short.lower()} {tmp_path / 'got2'}")   # any case
    assert lower.returncode == 0, lower.stdout + lower.stderr
    gone = server.smbclient("share", f"del {short}")
    assert gone.returncode == 0, gone.stdout + gone.stderr
    assert not (share / LONG).exists()


def test_a_directory_on_the_way_by_its_short_name(smbconf, tmp_path):
    server, share = started(smbconf)
    (share / DIRECTORY).mkdir()
    (share / DIRECTORY / "inside.txt").write_bytes(b"inside\n")
    (tmp_path / "up.txt").write_bytes(b"uploaded\n")
    short = short_name(DIRECTORY)
    got = server.smbclient("share", f"get {short}\\inside.txt {tmp_path / 'got'}")
    assert got.returncode == 0, got.stdout + got.stderr
    assert (tmp_path / "got").read_bytes() == b"inside\n"
    put = server.smbclient("share", f"put {tmp_path / 'up.txt'} {short}\\new.txt")
    assert put.returncode == 0, put.stdout + put.stderr
    assert (share / DIRECTORY / "new.txt").read_bytes() == b"uploaded\n"


def test_a_name_that_is_there_as_spelled_wins(smbconf, tmp_path):
    """A file whose own name is another's short name is that file, not the other."""
    server, share = started(smbconf)
    short = short_name(LONG)
    (share / LONG).write_bytes(b"long\n")
    (share / short).write_bytes(b"short\n")
    got = server.smbclient("share", f"get {short} {tmp_path / 'got'}")
    assert got.returncode == 0, got.stdout + got.stderr
    assert (tmp_path / "got").read_bytes() == b"short\n"


def test_a_vetoed_long_name_is_not_reached_through_its_short_name(smbconf, tmp_path):
    """`veto files` is judged on the long name a short one stands for: NOT_FOUND, as for the
    long name itself (a listing of the short name, as `del` makes first, finds nothing); the
    file is left alone."""
    server, share = started(smbconf, "veto files = /quarterly*/")
    (share / LONG).write_bytes(b"secret\n")
    short = short_name(LONG)
    for command, status in ((f"get {short} {tmp_path / 'got'}", "NT_STATUS_OBJECT_NAME_NOT_FOUND"),
                            (f"del {short}", "NT_STATUS_NO_SUCH_FILE"),
                            (f"get \"{LONG}\" {tmp_path / 'got'}", "NT_STATUS_OBJECT_NAME_NOT_FOUND")):
        done = server.smbclient("share", command)
        assert status in done.stdout + done.stderr, (command, done.stdout)
    assert not (tmp_path / "got").exists()
    assert (share / LONG).read_bytes() == b"secret\n"


def test_the_stream_depot_is_not_reached_through_its_short_name(smbconf, tmp_path):
    """The share's stream depot (which no client may name, and which the server opens as
    itself) has a short name too: naming it reaches nothing, nor does a name with a
    character no SMB name holds, made on the server by another program."""
    from smbring.vfs.api import STREAMS_DIR
    server, share = started(smbconf)
    (tmp_path / "data").write_bytes(b"stream data\n")
    put = server.smbclient("share", f"put {tmp_path / 'data'} \"f.txt:secret\"")
    assert put.returncode == 0, put.stdout + put.stderr
    assert (share / STREAMS_DIR).is_dir()
    (share / "a:b long name").write_bytes(b"colon\n")
    for name in (STREAMS_DIR, "a:b long name"):
        short = short_name(name)
        for command in (f"cd {short}", f"ls {short}\\*", f"get {short} {tmp_path / 'got'}"):
            done = server.smbclient("share", command)
            assert done.returncode != 0 and "NT_STATUS_" in done.stdout + done.stderr, (command, done.stdout)
            assert "stream data" not in done.stdout
    assert not (tmp_path / "got").exists()


def test_mangled_names_no_lists_none_and_reaches_nothing_by_them(smbconf, tmp_path):
    """`mangled names = no` (Samba's option; "illegal" reads the same here): no short name in
    a listing (smbclient's allinfo asks FileAlternateNameInformation: not found), and a short
    name reaches nothing; the long name works as ever."""
    server, share = started(smbconf, "mangled names = no")
    (share / LONG).write_bytes(b"the long file's data\n")
    short = short_name(LONG)
    info = server.smbclient("share", "allinfo \"" + LONG + "\"")
    assert "altname: " + short not in info.stdout, info.stdout
    got = server.smbclient("share", f"get {short} {tmp_path / 'got'}")
    assert "NT_STATUS_OBJECT_NAME_NOT_FOUND" in got.stdout + got.stderr, got.stdout
    listed = server.smbclient("share", "ls")
    assert LONG in listed.stdout and short not in listed.stdout
    got = server.smbclient("share", f"get \"{LONG}\" {tmp_path / 'got'}")
    assert got.returncode == 0 and (tmp_path / "got").read_bytes() == b"the long file's data\n"


def test_a_listing_shows_short_names_only_where_mangled_names_allow(smbconf):
    """FileIdBothDirectoryInformation's ShortName: the mangled name by default (as `mangled
    names = yes`), empty with `mangled names = no`, on the C batch path and on the
    per-entry one (`hide files` set) alike."""
    import struct
    from servers import PASSWORD, USER
    from smbring.smb import wire
    for options, expected in (("", short_name(LONG)), ("hide files = /nothing/", short_name(LONG)),
                              ("mangled names = no", ""), ("mangled names = no\nhide files = /nothing/", "")):
        server, share = started(smbconf, options)
        (share / LONG).write_bytes(b"x")
        with server.raw() as c:
            c.negotiate()
            tree = c.tree(c.logon(USER, PASSWORD), "share")
            r = tree.query_directory(tree.open(""), pattern=LONG, klass=37)
            assert r.status == wire.STATUS_SUCCESS, r
            entry = r.raw[64 + 8:]
            name_len, short_len = struct.unpack_from("<I", entry, 60)[0], entry[68]
            assert entry[104:104 + name_len].decode("utf-16-le") == LONG
            assert entry[70:70 + short_len].decode("utf-16-le") == expected, options


def test_a_file_saved_again_under_its_short_name_keeps_its_long_name(smbconf, tmp_path):
    """File name tunneling (smb.tunnel), as NTFS and smbd: a program that knows only the short
    name saves by deleting the file (or renaming it away) and creating the short name anew;
    the new file gets the long name back, not a file named by the short name. Samba's
    smbtorture smb2.mangle counts on it."""
    server, share = started(smbconf)
    short = short_name(LONG)
    (tmp_path / "v2").write_bytes(b"second version\n")
    (tmp_path / "v3").write_bytes(b"third version\n")
    (share / LONG).write_bytes(b"first version\n")
    saved = server.smbclient("share", f"del {short}; put {tmp_path / 'v2'} {short}")
    assert saved.returncode == 0, saved.stdout + saved.stderr
    assert sorted(p.name for p in share.iterdir()) == [LONG]
    assert (share / LONG).read_bytes() == b"second version\n"
    # renamed away to a backup, then the short name created again
    saved = server.smbclient("share", f"rename {short} backup.txt; put {tmp_path / 'v3'} {short}")
    assert saved.returncode == 0, saved.stdout + saved.stderr
    assert sorted(p.name for p in share.iterdir()) == sorted([LONG, "backup.txt"])
    assert (share / LONG).read_bytes() == b"third version\n"
    assert (share / "backup.txt").read_bytes() == b"second version\n"
    # renamed onto the short name: the long name too
    moved = server.smbclient("share", f"del {short}; rename backup.txt {short}")
    assert moved.returncode == 0, moved.stdout + moved.stderr
    assert sorted(p.name for p in share.iterdir()) == [LONG]
    assert (share / LONG).read_bytes() == b"second version\n"


def test_a_long_name_is_tunneled_to_the_user_who_removed_it_only(smbconf, tmp_path):
    """Another user creating the short name right after gets a file of that name: never the
    long name of a file he did not remove (he may not have been allowed to list it)."""
    from smbconf_server import OTHER, OTHER_PASSWORD
    server = smbconf("", {"share": "read only = no"}, users=((OTHER, OTHER_PASSWORD),))
    share = server.root / "share"
    short = short_name(LONG)
    (tmp_path / "v2").write_bytes(b"another user's file\n")
    (share / LONG).write_bytes(b"first version\n")
    gone = server.smbclient("share", f"del {short}")
    assert gone.returncode == 0, gone.stdout + gone.stderr
    put = server.smbclient("share", f"put {tmp_path / 'v2'} {short}", user=OTHER, password=OTHER_PASSWORD)
    assert put.returncode == 0, put.stdout + put.stderr
    assert sorted(p.name for p in share.iterdir()) == [short]


def test_mangled_names_no_tunnels_nothing(smbconf, tmp_path):
    server, share = started(smbconf, "mangled names = no")
    short = short_name(LONG)
    (tmp_path / "v2").write_bytes(b"second version\n")
    (share / LONG).write_bytes(b"first version\n")
    saved = server.smbclient("share", f"del \"{LONG}\"; put {tmp_path / 'v2'} {short}")
    assert saved.returncode == 0, saved.stdout + saved.stderr
    assert sorted(p.name for p in share.iterdir()) == [short]
