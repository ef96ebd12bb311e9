"""macOS's AppleDouble ("._") files taken into their files' streams while serving, on a
fruit share (`fruit:convert_adouble`, on by default, as Samba's vfs_fruit), against
`smbring serve --config`: a "._" file put beside a file on disk (as a copy from a FAT disk
leaves it) becomes the file's AFP_AfpInfo, AFP_Resource and attribute streams when a client
opens one of its Apple streams or lists its directory with macOS's enriched listings; once
all it held is there it is rewritten as Samba keeps one it took in (its Finder information
alone, never taken in again), or removed with fruit:delete_empty_adfiles (the share most
tests here use: a removal tells what was taken whole). What the file has is kept; a "._" file that is not
the file owner's, not a regular file, not AppleDouble, Samba's own, or holding more than is
taken while serving stays as it was, one that is open is left until it is closed; an account
that may not write the file takes nothing."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from smbconf_server import OTHER, OTHER_PASSWORD, smbconf  # noqa: F401  (the fixture)
from smbring.smb import aapl, wire
from smbring.smb.appledouble import RUNTIME_FORK_MOST
from smbring.smb.fs import MAX_STREAMS
from smbring.vfs.samba_xattrs import BLANK_RESOURCE_FORK, converted_appledouble
from servers import PASSWORD, USER
from test_aapl import SHARES as AAPL_SHARES, ask, connected, query, read_file, write_file
from test_aapl_afpinfo import streams
from test_aapl_listing import apple_fields, entries

sys.path.insert(0, str(Path(__file__).parents[1]))
from appledouble import macos_appledouble  # noqa: E402

# [mac] removes a "._" file taken in whole (fruit:delete_empty_adfiles); [keep] is Samba's default
SHARES = dict(AAPL_SHARES, mac=AAPL_SHARES["mac"] + "\nfruit:delete_empty_adfiles = yes",
              keep=AAPL_SHARES["mac"])
FINDER = b"TESTSLOW" + bytes(24)
FORK = bytes(range(0xF0, 0x100)) * 4
TAGS = ("com.apple.metadata:_kMDItemUserTags", b"bplist00tags")
TAGS_STREAM = "com.apple.metadata\uf022_kMDItemUserTags"


def put(share: Path, name: str, fork: bytes = FORK, xattrs=(TAGS,), data: bytes = b"data", **kw) -> Path:
    """The file `name` and a "._" file beside it as macOS writes one; the "._" file's path."""
    (share / name).write_bytes(data)
    ad = share / f"._{name}"
    ad.write_bytes(macos_appledouble(FINDER, [(n.encode(), v) for n, v in xattrs], fork, **kw))
    return ad


def stream_bytes(tree, name: str, size: int = 4096) -> bytes | None:
    r = tree.create(name, wire.GENERIC_READ)
    if r.status != wire.STATUS_SUCCESS:
        return None
    out = tree.read(r.file_id, size).body[16:]
    tree.close(r.file_id)
    return out


def test_opening_an_apple_stream_takes_the_appledouble_file_in(smbconf):
    """Its resource fork, Finder information (a whole AfpInfo) and embedded attributes become
    the file's streams, owned by the file's owner; the "._" file goes. A stream removed after
    (all-zero Finder information) stays removed: nothing is taken twice."""
    server = smbconf("", SHARES)
    share = server.root / "mac"
    ad = put(share, "f.txt")
    c, tree = connected(server, "mac")
    with c:
        assert stream_bytes(tree, "f.txt:AFP_Resource") == FORK
        assert not ad.exists()
        assert stream_bytes(tree, "f.txt:AFP_AfpInfo") == aapl.afp_info_of(FINDER)
        assert stream_bytes(tree, f"f.txt:{TAGS_STREAM}") == TAGS[1]
        assert streams(tree) == {"::$DATA": 4, ":AFP_AfpInfo:$DATA": 60, ":AFP_Resource:$DATA": len(FORK),
                                 f":{TAGS_STREAM}:$DATA": len(TAGS[1])}
        assert read_file(tree, "f.txt", 4) == b"data"
        write_file(tree, "f.txt:AFP_AfpInfo", aapl.afp_info_of(bytes(32)))     # (removes it)
        assert stream_bytes(tree, "f.txt:AFP_AfpInfo") is None
        assert ":AFP_AfpInfo:$DATA" not in streams(tree)


def test_an_enriched_listing_takes_them_in_before_it_shows_the_entry(smbconf):
    """With macOS's enriched listings negotiated, the entry already shows the resource
    fork's size and the type and creator the "._" file held; the "._" file is gone from the
    listing and the disk. A listing of another kind takes nothing."""
    server = smbconf("", SHARES)
    share = server.root / "mac"
    ad = put(share, "f.txt")
    put(share, "g.txt")
    c, tree = connected(server, "mac")
    with c:
        entries(tree, klass=38)
        assert ad.exists()
        ask(tree, query())
        listed = entries(tree)
        _most, _short, rfork, finder, _mode = apple_fields(listed["f.txt"])
        assert (rfork, finder[:8]) == (len(FORK), b"TESTSLOW")
        assert not ad.exists() and not (share / "._g.txt").exists()
        assert "._f.txt" not in entries(tree)


def test_what_the_file_has_is_kept_and_so_is_the_appledouble_file(smbconf):
    """A resource fork the file has already is not overwritten; the rest is taken, and the
    "._" file stays (it holds a fork that is not the file's)."""
    server = smbconf("", SHARES)
    share = server.root / "mac"
    (share / "f.txt").write_bytes(b"data")
    c, tree = connected(server, "mac")
    with c:
        write_file(tree, "f.txt:AFP_Resource", b"mine")
        ad = put(share, "f.txt")
        assert stream_bytes(tree, "f.txt:AFP_Resource") == b"mine"
        assert stream_bytes(tree, "f.txt:AFP_AfpInfo") == aapl.afp_info_of(FINDER)
        assert ad.exists()
        assert stream_bytes(tree, "f.txt:AFP_Resource") == b"mine"    # (and again: still kept)


def test_appledouble_files_that_are_not_taken(smbconf):
    """Left as they are, the file given no stream: one owned by another user than its file,
    a symbolic link to one, one with another name too (a hard link), one that is not AppleDouble,
    one Samba's vfs_fruit wrote (its filler "Netatalk": Samba's resource fork storage), one with a resource fork over
    RUNTIME_FORK_MOST (its Finder information is taken, the fork stays in it), and any on a
    share with fruit:convert_adouble = no, a read-only one, or one without fruit."""
    shares = dict(SHARES, noconv=SHARES["mac"] + "\nfruit:convert_adouble = no",
                  readonly=SHARES["mac"].replace("read only = no", "read only = yes"))
    server = smbconf("", shares)
    share = server.root / "mac"
    foreign = put(share, "foreign.txt")
    os.chown(foreign, 65534, 65534)
    (share / "linked.txt").write_bytes(b"data")
    elsewhere = put(server.root, "target.txt")
    os.symlink(elsewhere, share / "._linked.txt")
    linked_twice = put(share, "twice.txt")
    os.link(linked_twice, server.root / "elsewhere-link")
    (share / "junk.txt").write_bytes(b"data")
    (share / "._junk.txt").write_bytes(os.urandom(4096))
    big = put(share, "big.txt", fork=b"\x01" * (RUNTIME_FORK_MOST + 1))
    samba_kept = put(share, "samba.txt", filler=b"Netatalk".ljust(16))
    (server.root / "noconv").mkdir(exist_ok=True)
    off = put(server.root / "noconv", "f.txt")
    (server.root / "readonly").mkdir(exist_ok=True)
    read_only = put(server.root / "readonly", "f.txt")
    plain = put(server.root / "plain", "f.txt")
    c, tree = connected(server, "mac")
    with c:
        for name in ("foreign.txt", "linked.txt", "twice.txt", "junk.txt", "samba.txt"):
            assert stream_bytes(tree, f"{name}:AFP_Resource") is None, name
            assert streams(tree, name) == {"::$DATA": 4}, name
        assert stream_bytes(tree, "big.txt:AFP_Resource") is None
        assert stream_bytes(tree, "big.txt:AFP_AfpInfo") == aapl.afp_info_of(FINDER)
    assert foreign.exists() and os.path.islink(share / "._linked.txt") and elsewhere.exists()
    assert (share / "._junk.txt").exists() and big.exists() and linked_twice.exists() and samba_kept.exists()
    for name in ("noconv", "plain", "readonly"):
        c, tree = connected(server, name)
        with c:
            assert stream_bytes(tree, "f.txt:AFP_Resource") is None, name
    assert off.exists() and plain.exists() and read_only.exists()


def test_an_open_appledouble_file_is_left_until_it_is_closed(smbconf):
    """While a client has the "._" file open (perhaps still copying it) nothing is taken from
    it; once closed, all of it."""
    server = smbconf("", SHARES)
    share = server.root / "mac"
    ad = put(share, "f.txt")
    c, tree = connected(server, "mac")
    with c:
        held = tree.open("._f.txt", wire.GENERIC_READ)
        assert stream_bytes(tree, "f.txt:AFP_Resource") is None
        assert streams(tree) == {"::$DATA": 4} and ad.exists()
        tree.close(held)
        assert stream_bytes(tree, "f.txt:AFP_Resource") == FORK
        assert not ad.exists()


def test_an_account_that_may_not_write_the_file_takes_nothing(smbconf):
    """The "._" file of a file another account may only read: that account's open of the
    file's resource fork finds none, and the "._" file stays for one who may write it."""
    server = smbconf("", SHARES, users=((OTHER, OTHER_PASSWORD),))
    share = server.root / "mac"
    ad = put(share, "f.txt")
    for path in (share / "f.txt", ad):
        os.chown(path, 0, 0)
        os.chmod(path, 0o644)
    other = server.raw()
    with other:
        other.negotiate()
        tree = other.tree(other.logon(OTHER, OTHER_PASSWORD), "mac")
        assert stream_bytes(tree, "f.txt:AFP_Resource") is None
        ask(tree, query(), "other-probe")
        entries(tree)
    assert ad.exists()
    c, tree = connected(server, "mac")
    with c:
        assert stream_bytes(tree, "f.txt:AFP_Resource") == FORK
    assert not ad.exists()


def test_a_file_gets_no_more_streams_than_a_client_could_make(smbconf):
    """A "._" file with 200 attributes: the file gets MAX_STREAMS streams, as many as a
    client's CREATEs could make, and the "._" file keeps the rest."""
    server = smbconf("", SHARES)
    share = server.root / "mac"
    ad = put(share, "f.txt", xattrs=[(f"user.attr{i}", b"v") for i in range(200)])
    c, tree = connected(server, "mac")
    with c:
        assert stream_bytes(tree, "f.txt:AFP_Resource") == FORK
        assert len(streams(tree)) == MAX_STREAMS + 1       # (::$DATA too)
    assert ad.exists()


def test_a_blank_resource_fork_is_taken_for_none_where_asked(smbconf):
    """The resource fork macOS writes for a file that has none ("This resource fork
    intentionally left blank"): taken as it is by default, as Samba; with
    fruit:wipe_intentionally_left_blank_rfork = yes taken for none (no AFP_Resource stream),
    the rest taken and the "._" file removed all the same."""
    shares = dict(SHARES, wipe=SHARES["mac"] + "\nfruit:wipe_intentionally_left_blank_rfork = yes")
    server = smbconf("", shares)
    for name in ("mac", "wipe"):
        (server.root / name).mkdir(exist_ok=True)
        ad = put(server.root / name, "f.txt", fork=BLANK_RESOURCE_FORK)
        c, tree = connected(server, name)
        with c:
            assert stream_bytes(tree, "f.txt:AFP_AfpInfo") == aapl.afp_info_of(FINDER)
            fork = stream_bytes(tree, "f.txt:AFP_Resource")
            assert fork == (None if name == "wipe" else BLANK_RESOURCE_FORK), name
        assert not ad.exists()


def test_by_default_a_file_taken_in_whole_stays_rewritten_as_samba_keeps_it(smbconf):
    """fruit:delete_empty_adfiles = no (Samba's default): the "._" file stays, holding its
    Finder information alone and no resource fork, written "Netatalk" as Samba's vfs_fruit
    writes it: never taken in again, so a stream the client removes after does not come
    back, by an open of an Apple stream or by an enriched listing."""
    server = smbconf("", SHARES)
    share = server.root / "keep"
    share.mkdir(exist_ok=True)
    ad = put(share, "f.txt")
    other = put(share, "g.txt")
    c, tree = connected(server, "keep")
    with c:
        assert stream_bytes(tree, "f.txt:AFP_Resource") == FORK
        assert ad.read_bytes() == converted_appledouble(FINDER) and len(ad.read_bytes()) == 82
        assert stream_bytes(tree, f"f.txt:{TAGS_STREAM}") == TAGS[1]
        write_file(tree, "f.txt:AFP_AfpInfo", aapl.afp_info_of(bytes(32)))     # (removes it)
        assert stream_bytes(tree, "f.txt:AFP_AfpInfo") is None
        assert stream_bytes(tree, "f.txt:AFP_Resource") == FORK
        ask(tree, query())
        listed = entries(tree)
        assert stream_bytes(tree, "f.txt:AFP_AfpInfo") is None
        assert other.read_bytes() == converted_appledouble(FINDER)     # (by the listing)
        assert stream_bytes(tree, "g.txt:AFP_Resource") == FORK
        assert {"._f.txt", "._g.txt"} <= set(listed)      # (fruit:veto_appledouble = no)


def test_a_file_taken_in_that_the_account_may_not_rewrite_stays_as_it_was(smbconf):
    """Taken into the streams of a file the account may write, a "._" file it may only read
    (its own, mode 0444) is left as it was (as Samba leaves one it cannot rewrite); what the
    file has is kept when it is looked at again."""
    import pwd
    server = smbconf("", SHARES, users=((OTHER, OTHER_PASSWORD),))
    share = server.root / "keep"
    share.mkdir(exist_ok=True)
    share.chmod(0o777)
    ad = put(share, "f.txt")
    before = ad.read_bytes()
    account = pwd.getpwnam(OTHER)
    for path, mode in ((share / "f.txt", 0o644), (ad, 0o444)):
        os.chown(path, account.pw_uid, account.pw_gid)
        os.chmod(path, mode)
    other = server.raw()
    with other:
        other.negotiate()
        tree = other.tree(other.logon(OTHER, OTHER_PASSWORD), "keep")
        assert stream_bytes(tree, "f.txt:AFP_Resource") == FORK
        assert ad.read_bytes() == before
        write_file(tree, "f.txt:AFP_Resource", b"changed")
        assert stream_bytes(tree, "f.txt:AFP_Resource") == b"changed"
        assert ad.read_bytes() == before


@pytest.mark.skipif(not shutil.which("smbtorture"), reason="Samba's smbtorture is not installed")
def test_smbtorture_fruit_conversion_both_ways(smbconf, tmp_path):
    """smbtorture's vfs.fruit_conversion as Samba's own test run has it: a "._" file written
    through a share without fruit (its share), taken in by an enriched listing of a fruit
    share of the same directory with fruit:wipe_intentionally_left_blank_rfork, and there
    after (fruit:delete_empty_adfiles = no) or not (yes)."""
    fruit = "read only = no\nvfs objects = catia fruit streams_xattr\nfruit:veto_appledouble = no\n" \
            f"fruit:wipe_intentionally_left_blank_rfork = yes\npath = {tmp_path / 'tmp'}\n"
    server = smbconf("fruit:copyfile = yes", {"tmp": "read only = no",
                                              "keep": fruit + "fruit:delete_empty_adfiles = no",
                                              "remove": fruit + "fruit:delete_empty_adfiles = yes"})
    for share2, removes in (("keep", "false"), ("remove", "true")):
        done = subprocess.run(["smbtorture", "//127.0.0.1/tmp", "-p", str(server.port), "-U", f"{USER}%{PASSWORD}",
                               f"--option=torture:share2={share2}", f"--option=torture:delete_empty_adfiles={removes}",
                               "vfs.fruit_conversion"], capture_output=True, text=True, timeout=300)
        assert "success: convert_xattr_and_empty_rfork_then_delete" in done.stdout, (share2, done.stdout[-3000:])
