"""`smbring import-samba`: a directory Samba's smbd served, written through smbd itself by
smbclient (DOS attributes, creation times, streams kept by vfs_streams_xattr, macOS's Finder
information and resource forks kept by vfs_fruit's defaults), then served by smbring after
the import: its clients see what Samba's saw. And what the import must not do: follow a
link out of the tree, trust a value that does not parse, overwrite what smbring keeps."""
import os
import pwd
import re
import struct
import subprocess
import sys

from appledouble import macos_appledouble
from samba_servers import samba_server  # noqa: F401  (the fixture)
from smbconf_server import smbconf  # noqa: F401  (the fixture)
from servers import PASSWORD, USER

SAMBA_SHARES = """[win]
    path = {d}/share
    read only = no
    vfs objects = acl_xattr streams_xattr
[mac]
    path = {d}/share
    read only = no
    vfs objects = catia fruit streams_xattr
"""
FINDER = b"TEXTttxt"
READ_CONTROL, WRITE_DAC = 0x20000, 0x40000
AFP_INFO = b"AFP\0" + struct.pack(">III", 0x100, 0, 0x80000000) + FINDER.ljust(32, b"\0") + bytes(12)


def smbclient(port: int, share: str, commands: str, user: str, password: str) -> str:
    done = subprocess.run(["smbclient", f"//127.0.0.1/{share}", "-p", str(port), "-U", f"{user}%{password}",
                           "-c", commands], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def import_samba(path, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "smbring.cli", "import-samba", str(path), *args],
                          capture_output=True, text=True, timeout=120)


def allinfo(text: str) -> dict[str, str]:
    return dict(re.findall(r"^(create_time|attributes):\s+(.*)$", text, re.M))


def test_what_samba_kept_is_seen_through_smbring(samba_server, smbconf, tmp_path):
    samba = samba_server(shares=SAMBA_SHARES)
    user, password, share = samba["user"], samba["password"], samba["share"]
    (tmp_path / "data").write_bytes(b"hello\n")
    (tmp_path / "afp").write_bytes(AFP_INFO)
    (tmp_path / "fork").write_bytes(b"resource fork " * 1000)
    smbclient(samba["port"], "win", f"put {tmp_path}/data f.txt; put {tmp_path}/data f.txt:Zone.Identifier; "
              "setmode f.txt +hs; mkdir d; setmode d +h", user, password)
    smbclient(samba["port"], "mac", f"put {tmp_path}/data m.txt; put {tmp_path}/afp m.txt:AFP_AfpInfo; "
              f"put {tmp_path}/fork m.txt:AFP_Resource", user, password)
    before = {name: allinfo(smbclient(samba["port"], "win", f"allinfo {name}", user, password))
              for name in ("f.txt", "d")}
    assert "user.org.netatalk.Metadata" in os.listxattr(share / "m.txt")    # (vfs_fruit's defaults)
    assert (share / "._m.txt").exists()

    dry = import_samba(share, "--dry-run")
    assert dry.returncode == 0 and "would take over the DOS attributes of" in dry.stdout, dry
    assert not (share / ".smbring-streams").exists()
    done = import_samba(share)
    assert done.returncode == 0, done
    assert "the NT ACLs of 2 " in done.stdout and not done.stderr, done      # (f.txt's and d's)

    server = smbconf("", {"win": f"path = {share}\nread only = no",
                          "mac": f"path = {share}\nread only = no\nvfs objects = fruit"})
    for name in ("f.txt", "d"):
        seen = allinfo(smbclient(server.port, "win", f"allinfo {name}", USER, PASSWORD))
        assert seen == before[name], (name, seen, before[name])
    out = tmp_path / "out"
    smbclient(server.port, "win", f"get f.txt:Zone.Identifier {out}", USER, PASSWORD)
    assert out.read_bytes() == b"hello\n"
    smbclient(server.port, "mac", f"get m.txt:AFP_AfpInfo {out}", USER, PASSWORD)
    assert out.read_bytes() == AFP_INFO
    smbclient(server.port, "mac", f"get m.txt:AFP_Resource {out}", USER, PASSWORD)
    assert out.read_bytes() == b"resource fork " * 1000
    # the "._" file stays on disk for Samba; the fruit share does not show it (veto_appledouble)
    assert "._m.txt" not in smbclient(server.port, "mac", "ls", USER, PASSWORD)
    assert "._m.txt" in smbclient(server.port, "win", "ls", USER, PASSWORD)

    again = import_samba(share, "--json")
    assert again.returncode == 0
    assert '"dos_taken": 0' in again.stdout and '"streams_taken": 0' in again.stdout


def test_nothing_outside_nothing_unparsed_nothing_overwritten(tmp_path):
    """A link out of the tree is not followed (nor a "._" link beside a file), a "._" file
    of another user than its file's owner is not taken; a DOSATTRIB
    that does not parse and a stream name smbring cannot keep are reported and left alone
    (exit status 1); DOS information smbring keeps already stays."""
    tree, outside = tmp_path / "tree", tmp_path / "outside"
    tree.mkdir()
    outside.mkdir()
    secret = outside / "secret"
    secret.write_bytes(b"x")
    os.setxattr(secret, "user.DosStream.leak:$DATA", b"outside\0")
    os.symlink(secret, tree / "link")
    os.symlink(outside, tree / "dirlink")
    (tree / "x").write_bytes(b"x")
    os.symlink(secret, tree / "._x")
    bad = tree / "bad"
    bad.write_bytes(b"b")
    os.setxattr(bad, "user.DOSATTRIB", b"\0\x05\0\x05\0\0")
    os.setxattr(bad, "user.DosStream.a/b:$DATA", b"s\0")
    (tree / "y").write_bytes(b"y")
    planted = tree / "._y"          # an AppleDouble file another user put beside y
    planted.write_bytes(b"\0\5\x16\7\0\2\0\0" + bytes(16) + b"\0\1" + struct.pack(">III", 2, 38, 3) + b"bad")
    os.chown(planted, 12345, 12345)
    mine = tree / "mine"
    mine.write_bytes(b"m")
    os.setxattr(mine, "user.DOSATTRIB", bytes.fromhex("00000500050000001100000022000000") + bytes(8))
    kept = struct.pack("<IQQQQ", 0x4, 0, 0, 0, 0)
    os.setxattr(mine, "user.smbring.dos", kept)

    done = import_samba(tree)
    assert done.returncode == 1, done
    assert "DOSATTRIB does not parse" in done.stderr and "'a/b'" in done.stderr
    assert "._x: not opened" in done.stderr
    assert "._y: owned by another user than its file" in done.stderr
    assert os.listxattr(secret) == ["user.DosStream.leak:$DATA"]
    assert os.getxattr(mine, "user.smbring.dos") == kept
    assert "user.smbring.dos" not in os.listxattr(bad)
    depot = tree / ".smbring-streams"
    assert not depot.exists() or not any(p.is_file() for p in depot.rglob("*"))


def set_dacl(samba: dict, name: str, aces: list) -> None:
    """The file's DACL set through smbd's [win] share (vfs_acl_xattr stores it)."""
    from raw import RawClient
    from smbring.smb import acl, wire
    dacl = acl.Descriptor(control=acl.SE_SELF_RELATIVE | acl.SE_DACL_PRESENT, dacl=aces)
    c = RawClient(samba["port"])
    with c:
        c.negotiate()
        tree = c.tree(c.logon(samba["user"], samba["password"]), "win")
        fid = tree.open(name, READ_CONTROL | WRITE_DAC)
        assert tree.set_info(fid, wire.INFO_SECURITY, 0, dacl.pack(acl.DACL), acl.DACL).status == 0
        tree.close(fid)


def test_an_nt_acl_samba_kept_is_enforced_after_the_import(samba_server, smbconf, tmp_path):
    """A DACL set through smbd that denies Everyone reading the descriptor (READ_CONTROL: a
    right no POSIX ACL holds, so only the NT ACL says it) and allows the rest: before the import smbring's
    user may open the file for it, after it STATUS_ACCESS_DENIED, and the descriptor names
    smbring's SIDs (the file's owner and group as S-1-22-1-uid and S-1-22-2-gid)."""
    from smbring.smb import acl, sids, wire

    samba = samba_server(shares=SAMBA_SHARES)
    share = samba["share"]
    (tmp_path / "data").write_bytes(b"hello\n")
    smbclient(samba["port"], "win", f"put {tmp_path}/data f.txt", samba["user"], samba["password"])
    set_dacl(samba, "f.txt", [acl.Ace(acl.DENIED, 0, READ_CONTROL, acl.EVERYONE),
                              acl.Ace(acl.ALLOWED, 0, wire.FILE_ALL_ACCESS, acl.EVERYONE)])
    assert "security.NTACL" in os.listxattr(share / "f.txt")
    # another of Samba's users (an account of this host: nobody), named by the SID Samba gave it
    conf = str(share.parent / "smb.conf")
    subprocess.run(["smbpasswd", "-c", conf, "-a", "-s", "nobody"], input=f"{PASSWORD}\n{PASSWORD}\n",
                   text=True, check=True, capture_output=True)
    accounts = subprocess.run(["pdbedit", "-s", conf, "-L", "-v"], capture_output=True, text=True, check=True).stdout
    nobody_sid = re.search(r"^Unix username:\s+nobody\n(?:.*\n)*?User SID:\s+(\S+)", accounts, re.M).group(1)
    smbclient(samba["port"], "win", f"put {tmp_path}/data g.txt", samba["user"], samba["password"])
    set_dacl(samba, "g.txt", [acl.Ace(acl.ALLOWED, 0, wire.FILE_ALL_ACCESS, sids.from_text(nobody_sid)),
                              acl.Ace(acl.ALLOWED, 0, wire.FILE_ALL_ACCESS, acl.EVERYONE)])

    server = smbconf("", {"win": f"path = {share}\nread only = no"}, accounts=True)

    def open_status() -> int:
        c = server.raw()
        with c:
            c.negotiate()
            tree = c.tree(c.logon(USER, PASSWORD), "win")
            r = tree.create("f.txt", READ_CONTROL)
            if r.status == wire.STATUS_SUCCESS:
                tree.close(r.file_id)
            return r.status

    assert open_status() == wire.STATUS_SUCCESS
    done = import_samba(share)
    assert done.returncode == 1 and "the NT ACLs of 1 " in done.stdout, done
    # g.txt's ACL names an account by Samba's own SID: taken only where Samba says who it is
    assert "g.txt: names SIDs no account here has: " + nobody_sid in done.stderr, done
    assert "user.smbring.sd" not in os.listxattr(share / "g.txt")
    done = import_samba(share, "--samba-conf", conf)
    assert done.returncode == 0 and "the NT ACLs of 1 (1 had smbring's own)" in done.stdout, done
    stored = acl.parse(os.getxattr(share / "g.txt", "user.smbring.sd"))
    assert [a.sid for a in stored.dacl] == [acl.unix_user(pwd.getpwnam("nobody").pw_uid), acl.EVERYONE]
    assert open_status() == wire.STATUS_ACCESS_DENIED
    stored = acl.parse(os.getxattr(share / "f.txt", "user.smbring.sd"))
    st = os.stat(share / "f.txt")
    assert (stored.owner, stored.group) == (acl.unix_user(st.st_uid), acl.sid(22, 2, st.st_gid))
    assert [(a.type, a.sid) for a in stored.dacl] == [(acl.DENIED, acl.EVERYONE), (acl.ALLOWED, acl.EVERYONE)]


def test_what_macos_embedded_in_a_dot_underscore_file_becomes_streams(smbconf, tmp_path):
    """A "._" file macOS wrote (a copy to a volume without extended attributes): its Finder
    information, its resource fork (larger than the header's first page) and the extended
    attributes it embedded become the streams macOS's client shows over SMB; one whose ATTR
    block points outside itself is reported and only its Finder information and fork are taken."""
    tree = tmp_path / "tree"
    tree.mkdir()
    fork = os.urandom(100_000)
    tags = b"bplist00\xa1\x01UGreen\n"
    (tree / "f.txt").write_bytes(b"data")
    (tree / "._f.txt").write_bytes(macos_appledouble(
        FINDER, [(b"com.apple.metadata:_kMDItemUserTags", tags), (b"foo:bar", b"baz")], fork))
    (tree / "g.txt").write_bytes(b"data")
    broken = bytearray(macos_appledouble(FINDER, [(b"x", b"yz")], b"fork"))
    struct.pack_into(">I", broken, 50 + 32 + 2 + 36, 60_000)      # the value's offset: past the block
    (tree / "._g.txt").write_bytes(bytes(broken))

    done = import_samba(tree)
    assert done.returncode == 1, done
    assert "._g.txt: its embedded extended attributes do not parse" in done.stderr, done
    server = smbconf("", {"mac": f"path = {tree}\nread only = no\nvfs objects = fruit"})
    out = tmp_path / "out"
    streams = smbclient(server.port, "mac", "allinfo f.txt", USER, PASSWORD)
    assert "com.apple.metadata\uf022_kMDItemUserTags" in streams and "foo\uf022bar" in streams, streams
    for name, expected in (("AFP_Resource", fork), ("AFP_AfpInfo", AFP_INFO),
                           ("com.apple.metadata\uf022_kMDItemUserTags", tags), ("foo\uf022bar", b"baz")):
        smbclient(server.port, "mac", f'get "f.txt:{name}" {out}', USER, PASSWORD)
        assert out.read_bytes() == expected, name
    smbclient(server.port, "mac", f"get g.txt:AFP_Resource {out}", USER, PASSWORD)
    assert out.read_bytes() == b"fork"
    assert ":x:" not in smbclient(server.port, "mac", "allinfo g.txt", USER, PASSWORD)


def test_an_nt_acl_whose_posix_acls_changed_since_is_not_taken(samba_server, tmp_path):
    """Samba keeps with each NT ACL (version 4) a hash of the POSIX ACLs, owner, group and mode
    it set with it, and shows the POSIX ACLs instead once they no longer match (a chmod or
    setfacl made behind its back). The import takes the same view: the NT ACLs smbd just wrote
    (a file's; a directory's, with its default ACL) match and are taken; one whose file was
    chmod'ed, or whose POSIX ACL got another entry, is not (reported, exit status 1), unless
    --ignore-system-acls (Samba's `acl_xattr:ignore system acls`)."""
    from smbring.smb import acl, wire
    samba = samba_server(shares=SAMBA_SHARES)
    share = samba["share"]
    (tmp_path / "data").write_bytes(b"hello\n")
    for name in ("kept.txt", "chmoded.txt", "setfacled.txt"):
        smbclient(samba["port"], "win", f"put {tmp_path}/data {name}", samba["user"], samba["password"])
        set_dacl(samba, name, [acl.Ace(acl.DENIED, 0, READ_CONTROL, acl.EVERYONE),
                               acl.Ace(acl.ALLOWED, 0, wire.FILE_ALL_ACCESS, acl.EVERYONE)])
    smbclient(samba["port"], "win", "mkdir dir", samba["user"], samba["password"])
    set_dacl(samba, "dir", [acl.Ace(acl.ALLOWED, 3, wire.FILE_ALL_ACCESS, acl.EVERYONE)])
    assert "system.posix_acl_default" in os.listxattr(share / "dir")
    os.chmod(share / "chmoded.txt", os.stat(share / "chmoded.txt").st_mode & 0o7777 & ~0o001)
    raw = os.getxattr(share / "setfacled.txt", "system.posix_acl_access")
    entries = [raw[i:i + 8] for i in range(4, len(raw), 8)]
    extra = struct.pack("<HHI", 0x02, 4, 65534)          # ACL_USER nobody: r (after the other users)
    at = max(i for i, e in enumerate(entries) if struct.unpack_from("<H", e)[0] <= 0x02) + 1
    os.setxattr(share / "setfacled.txt", "system.posix_acl_access", raw[:4] + b"".join(entries[:at] + [extra] + entries[at:]))

    done = import_samba(share, "--dry-run")
    assert done.returncode == 1, done
    for name in ("chmoded.txt", "setfacled.txt"):
        assert f"{name}: its POSIX ACLs, owner, group or mode changed after Samba stored it" in done.stderr, done
    assert "kept.txt" not in done.stderr and "dir:" not in done.stderr, done
    assert "the NT ACLs of 2 " in done.stdout, done      # (kept.txt and dir)
    done = import_samba(share, "--dry-run", "--ignore-system-acls")
    assert done.returncode == 0 and "the NT ACLs of 4 " in done.stdout, done
