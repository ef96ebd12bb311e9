"""smb.conf's options on names and modes against a real server: veto files (neither listed nor
reachable, however the name is spelled or reached), hide files and hide dot files (listed with
the hidden attribute, reachable by name, as in Samba), hide special files, and the modes of new
files and directories (create mask, directory mask, force create/directory mode)."""
from __future__ import annotations

import os
import stat

from smbconf_server import smbconf  # noqa: F401

from servers import PASSWORD, USER
from smbring.smb import wire


def tree(server, share="share"):
    c = server.raw()
    c.negotiate((wire.SMB311,))
    s = c.logon(USER, PASSWORD)
    return c.tree(s, share)


def test_veto_files_are_neither_listed_nor_reachable(smbconf, tmp_path):
    server = smbconf("", {"share": "read only = no\nveto files = /*.secret/Private/a?c/"})
    root = tmp_path / "share"
    (root / "x.secret").write_text("hidden")
    (root / "private").mkdir()
    (root / "private" / "inner.txt").write_text("inner")
    (root / "abc").write_text("abc")
    (root / "abcd").write_text("abcd")
    (root / "open.txt").write_text("open")
    r = server.smbclient("share", "ls")
    assert "open.txt" in r.stdout and "abcd" in r.stdout
    for name in ("x.secret", "private", " abc "):
        assert name not in r.stdout, r.stdout
    got = tmp_path / "got"
    # by name, in another case, through a vetoed directory, via a stream, by a wildcard listing
    for attempt in ("get x.secret", "get X.SECRET", "get private\\inner.txt", "get PRIVATE\\inner.txt",
                    "get x.secret:stream", "get x.secret::$DATA", "get ABC"):
        r = server.smbclient("share", f"{attempt} {got}")
        out = r.stdout + r.stderr
        assert "NT_STATUS_OBJECT_NAME_NOT_FOUND" in out or "NT_STATUS_OBJECT_PATH_NOT_FOUND" in out, (attempt, out)
        assert not got.exists()
    r = server.smbclient("share", "ls *.secret")
    assert "x.secret" not in r.stdout
    r = server.smbclient("share", "ls private\\*")
    assert "inner.txt" not in r.stdout
    # nor created, nor renamed to, nor made a directory
    src = tmp_path / "src.txt"
    src.write_text("new")
    for command in (f"put {src} new.secret", "rename open.txt OPEN.SECRET", "mkdir Private2\\..\\abc",
                    "mkdir ABC"):
        r = server.smbclient("share", command)
        assert r.returncode != 0 or "NT_STATUS" in r.stdout + r.stderr, (command, r.stdout)
    assert not (root / "new.secret").exists() and not (root / "OPEN.SECRET").exists()
    assert (root / "open.txt").exists() and (root / "abc").is_file()


def test_hidden_names_are_listed_hidden_and_reachable(smbconf, tmp_path):
    server = smbconf("", {"share": "read only = no\nhide files = /*.tmp/", "shown": "hide dot files = no"})
    for share in ("share", "shown"):
        (tmp_path / share / ".profile").write_text("dot")
        (tmp_path / share / "scratch.tmp").write_text("tmp")
        (tmp_path / share / "plain.txt").write_text("plain")
    listing = {line.split()[0]: line.split()[1] for line in server.smbclient("share", "ls").stdout.splitlines()
               if line.strip() and line.split()[0] not in (".", "..") and "blocks" not in line}
    assert "H" in listing[".profile"] and "H" in listing["scratch.tmp"], listing
    assert "H" not in listing["plain.txt"]
    # opened by name (Samba allows it), and the attribute shows there too
    got = tmp_path / "got"
    r = server.smbclient("share", f"get scratch.tmp {got}")
    assert r.returncode == 0 and got.read_text() == "tmp"
    r = server.smbclient("share", "allinfo .profile")
    assert "attributes: HA" in r.stdout or "attributes: H" in r.stdout, r.stdout
    shown = server.smbclient("shown", "ls").stdout
    assert not any(line.split()[0] == ".profile" and "H" in line.split()[1]
                   for line in shown.splitlines() if line.strip())


def test_hide_special_files_leaves_fifos_out(smbconf, tmp_path):
    server = smbconf("", {"share": "hide special files = yes", "other": ""})
    for share in ("share", "other"):
        os.mkfifo(tmp_path / share / "pipe")
        (tmp_path / share / "file").write_text("f")
    assert "pipe" not in server.smbclient("share", "ls").stdout
    assert "pipe" in server.smbclient("other", "ls").stdout


def _names(listing: str) -> set[str]:
    return {line.split()[0] for line in listing.splitlines()
            if line.startswith("  ") and "blocks" not in line}


def test_dont_descend_lists_a_directory_empty(smbconf, tmp_path):
    # Samba's `dont descend`: the directories named are listed with only "." and "..", in any
    # case they are reached in; what is in them stays reachable by name; other directories,
    # and the same names elsewhere, list as before
    server = smbconf("", {"share": "dont descend = /proc, ./deep/inner", "root": "dont descend = .",
                          "other": ""})
    for share in ("share", "other"):
        for d in ("proc", "deep/inner", "deep/other", "x/proc"):
            (tmp_path / share / d).mkdir(parents=True)
            (tmp_path / share / d / "f.txt").write_text(d)
    (tmp_path / "root" / "top.txt").write_text("top")
    for path in ("proc", "PROC", "deep\\inner", "Deep\\INNER"):
        names = _names(server.smbclient("share", f"ls {path}\\*").stdout)
        assert names == {".", ".."}, (path, names)
        assert "f.txt" in _names(server.smbclient("other", f"ls {path}\\*").stdout), path
    for path in ("deep\\other", "x\\proc"):
        assert "f.txt" in _names(server.smbclient("share", f"ls {path}\\*").stdout), path
    assert {"proc", "deep", "x"} <= _names(server.smbclient("share", "ls").stdout)
    got = tmp_path / "got"
    r = server.smbclient("share", f"get proc\\f.txt {got}")
    assert r.returncode == 0 and got.read_text() == "proc"
    # a search for the name itself finds nothing there either (as Samba)
    r = server.smbclient("share", "ls proc\\f.txt")
    assert "NT_STATUS_NO_SUCH_FILE" in r.stdout + r.stderr and not _names(r.stdout), r.stdout
    assert _names(server.smbclient("root", "ls").stdout) == {".", ".."}
    r = server.smbclient("root", f"get top.txt {got}")
    assert r.returncode == 0 and got.read_text() == "top"


def test_modes_of_new_files_and_directories(smbconf, tmp_path):
    server = smbconf("", {"share": "read only = no\ncreate mask = 0640\ndirectory mask = 0750\n"
                                   "force create mode = 0004\nforce directory mode = 0001",
                          "plain": "read only = no"},
                     preexec_fn=lambda: os.umask(0o077))   # the server's umask does not decide
    src = tmp_path / "src.txt"
    src.write_text("x")
    for share in ("share", "plain"):
        r = server.smbclient(share, f"put {src} f.txt; mkdir d")
        assert r.returncode == 0, r.stdout + r.stderr
    mode = lambda p: stat.S_IMODE(os.stat(p).st_mode)    # noqa: E731
    assert mode(tmp_path / "share" / "f.txt") == 0o644 & 0o640 | 0o004
    assert mode(tmp_path / "share" / "d") == 0o777 & 0o750 | 0o001
    assert mode(tmp_path / "plain" / "f.txt") == 0o644    # Samba's defaults: 0744, 0755
    assert mode(tmp_path / "plain" / "d") == 0o755


def test_clearing_readonly_gives_back_only_what_the_create_mask_allows(smbconf, tmp_path):
    """A file's READONLY attribute is its lack of write bits; clearing it gives the owner's
    back only where the share's create mask lets a file have it (as Samba's unix_mode): with
    `create mask = 0444` no client makes a file writable by clearing READONLY."""
    server = smbconf("", {"share": "read only = no\ncreate mask = 0444", "plain": "read only = no"})
    src = tmp_path / "src.txt"
    src.write_text("x")
    mode = lambda p: stat.S_IMODE(os.stat(p).st_mode)    # noqa: E731
    for share in ("share", "plain"):
        r = server.smbclient(share, f"put {src} f.txt; setmode f.txt +r; setmode f.txt -r")
        assert r.returncode == 0, r.stdout + r.stderr
    assert mode(tmp_path / "share" / "f.txt") & 0o222 == 0
    assert mode(tmp_path / "plain" / "f.txt") & 0o200
