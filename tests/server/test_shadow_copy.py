"""Previous versions from file-system snapshots (`vfs objects = shadow_copy2`, Samba's
shadow:* options), against `smbring serve --config` with Samba's smbclient: its `allinfo`
lists a file's previous versions (FSCTL_SRV_ENUMERATE_SNAPSHOTS) and reads each, an
"@GMT-..." path component becomes a timewarp token (the TWrp create context) as Windows'
Previous Versions tab sends it. A snapshot is a directory of the snapshot directory named by
its time; what it holds is served read-only, as the session's account, never past its own
root."""
import datetime
import os
import shutil
import struct
import subprocess

import pytest

from servers import PASSWORD, USER
from smbconf_server import smbconf  # noqa: F401  (the fixture)
from smbprotocol.exceptions import SMBResponseException
from smbprotocol_user import INFO_FILE, UserClient, create_context

OLD, OLDER = "@GMT-2026.12.02-11.30.00", "@GMT-2026.12.01-10.00.00"


def snapshot(root, name: str, files: dict) -> None:
    for path, data in files.items():
        target = root / ".snapshots" / name / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


def shadow_share(tmp_path, more: str = "") -> tuple[dict, object]:
    share = tmp_path / "share"
    (share / "docs").mkdir(parents=True)
    (share / "docs" / "report.txt").write_bytes(b"today\n")
    snapshot(share, OLDER, {"docs/report.txt": b"version one\n"})
    snapshot(share, OLD, {"docs/report.txt": b"version two\n", "docs/gone.txt": b"deleted since\n"})
    (share / ".snapshots" / "not a snapshot").mkdir()
    for directory, _dirs, files in os.walk(tmp_path):
        os.chmod(directory, 0o755)
        for name in files:
            os.chmod(os.path.join(directory, name), 0o644)
    options = (f"path = {share}\nread only = no\nvfs objects = shadow_copy2\n"
               f"shadow:mountpoint = {share}\n{more}")
    return {"share": options, "plain": f"path = {share}\nread only = no"}, share


def run(server, share: str, command: str, **kw) -> subprocess.CompletedProcess:
    return server.smbclient(share, command, **kw)


def test_previous_versions_are_listed_newest_first_and_read(smbconf, tmp_path):
    shares, _share = shadow_share(tmp_path)
    server = smbconf("", shares)
    info = run(server, "share", "allinfo docs\\report.txt")
    assert info.returncode == 0, info.stdout + info.stderr
    listed = [line for line in info.stdout.splitlines() if line.startswith("@GMT-")]
    assert listed == [OLD, OLDER], info.stdout          # ("not a snapshot" is none)
    for token, data in ((OLD, b"version two\n"), (OLDER, b"version one\n")):
        got = run(server, "share", f"get {token}\\docs\\report.txt {tmp_path / 'got'}")
        assert got.returncode == 0, got.stdout + got.stderr
        assert (tmp_path / "got").read_bytes() == data
    run(server, "share", f"get docs\\report.txt {tmp_path / 'got'}")
    assert (tmp_path / "got").read_bytes() == b"today\n"
    listing = run(server, "share", f"ls {OLD}\\docs\\*")
    assert "gone.txt" in listing.stdout and "report.txt" in listing.stdout, listing.stdout
    missing = run(server, "share", f"get {OLDER}\\docs\\gone.txt {tmp_path / 'x'}")
    assert "NT_STATUS_OBJECT_NAME_NOT_FOUND" in missing.stdout + missing.stderr
    none = run(server, "share", f"get @GMT-2020.01.01-00.00.00\\docs\\report.txt {tmp_path / 'x'}")
    assert "NT_STATUS_OBJECT_NAME_NOT_FOUND" in none.stdout + none.stderr


def test_a_previous_version_is_read_only(smbconf, tmp_path):
    shares, share = shadow_share(tmp_path)
    server = smbconf("", shares)
    (tmp_path / "new").write_bytes(b"new\n")
    for command in (f"put {tmp_path / 'new'} {OLD}\\docs\\report.txt", f"put {tmp_path / 'new'} {OLD}\\docs\\new.txt",
                    f"del {OLD}\\docs\\report.txt", f"mkdir {OLD}\\docs\\sub",
                    f"rename {OLD}\\docs\\report.txt {OLD}\\docs\\moved.txt"):
        done = run(server, "share", command)
        assert "NT_STATUS_ACCESS_DENIED" in done.stdout + done.stderr or "NT_STATUS_MEDIA_WRITE_PROTECTED" in \
            done.stdout + done.stderr or "NT_STATUS_OBJECT_NAME_NOT_FOUND" in done.stdout + done.stderr, \
            (command, done.stdout, done.stderr)
    assert sorted(p.name for p in (share / ".snapshots" / OLD / "docs").iterdir()) == ["gone.txt", "report.txt"]
    assert (share / ".snapshots" / OLD / "docs" / "report.txt").read_bytes() == b"version two\n"


def timewarp(token: str) -> bytes:
    """The TWrp create context's data for a snapshot token: its time as a FILETIME."""
    when = datetime.datetime.strptime(token, "@GMT-%Y.%m.%d-%H.%M.%S").replace(tzinfo=datetime.timezone.utc)
    return struct.pack("<Q", int(when.timestamp()) * 10_000_000 + 116444736000000000)


MEDIA_WRITE_PROTECTED = 0xC00000A2


def test_a_previous_version_opened_for_writing_refuses_each_change(smbconf, tmp_path):
    """As Windows (and Samba's shadow_copy2): a previous version opens for writing, and every
    change through it (data, size, times, rename, delete) is STATUS_MEDIA_WRITE_PROTECTED; it
    still reads, and neither it nor the live file changes."""
    shares, share = shadow_share(tmp_path)
    server = smbconf("", shares)
    with UserClient("127.0.0.1", server.port, USER, PASSWORD, "share") as client:
        twrp = [create_context(b"TWrp", timewarp(OLD))]
        f = client.open("docs\\report.txt", 0x80000000 | 0x40000000 | 0x10000, contexts=twrp)  # GENERIC_READ, _WRITE, DELETE
        with pytest.raises(SMBResponseException) as refused:
            f.write(b"changed", 0)
        assert refused.value.status == MEDIA_WRITE_PROTECTED
        for klass, buffer in ((4, struct.pack("<qqqqI4x", 0, 0, 1 << 57, 0, 0)),    # FileBasicInformation
                              (20, struct.pack("<q", 0)),                           # FileEndOfFileInformation
                              (13, b"\1"),                                          # FileDispositionInformation
                              (10, struct.pack("<B7xQI", 0, 0, 12) + "x.txt".encode("utf-16-le")[:12])):  # rename
            assert client.set_info(f, INFO_FILE, klass, buffer) == MEDIA_WRITE_PROTECTED, klass
        assert f.read(0, 100) == b"version two\n"
        f.close()
    assert (share / ".snapshots" / OLD / "docs" / "report.txt").read_bytes() == b"version two\n"
    assert (share / "docs" / "report.txt").read_bytes() == b"today\n"
    assert sorted(p.name for p in (share / "docs").iterdir()) == ["report.txt"]


def test_a_snapshot_is_not_left_through_a_link_or_a_dotdot(smbconf, tmp_path):
    """A link in a snapshot to a file outside it is not followed; ".." never climbs out of
    the snapshot (nor of the share)."""
    shares, share = shadow_share(tmp_path)
    (tmp_path / "secret.txt").write_bytes(b"secret\n")
    os.symlink(tmp_path / "secret.txt", share / ".snapshots" / OLD / "docs" / "escape.txt")
    os.symlink("../../../../secret.txt", share / ".snapshots" / OLD / "docs" / "relative.txt")
    server = smbconf("", shares)
    for name in (f"{OLD}\\docs\\escape.txt", f"{OLD}\\docs\\relative.txt", f"{OLD}\\..\\..\\secret.txt",
                 f"{OLD}\\docs\\..\\..\\..\\secret.txt"):
        done = run(server, "share", f"get {name} {tmp_path / 'got'}")
        assert done.returncode != 0 and "NT_STATUS_" in done.stdout + done.stderr, (name, done.stdout)
    assert not (tmp_path / "got").exists()


def test_a_share_without_shadow_copy2_has_no_previous_versions(smbconf, tmp_path):
    shares, _share = shadow_share(tmp_path)
    server = smbconf("", shares)
    info = run(server, "plain", "allinfo docs\\report.txt")
    assert info.returncode == 0 and "@GMT-" not in info.stdout, info.stdout
    got = run(server, "plain", f"get {OLD}\\docs\\report.txt {tmp_path / 'got'}")
    assert "NT_STATUS_OBJECT_NAME_NOT_FOUND" in got.stdout + got.stderr


def test_sort_and_format_as_samba_reads_them(smbconf, tmp_path):
    """shadow:sort = asc lists the oldest first; shadow:format names snapshots another way
    (Snapper-like names here), their tokens still @GMT in UTC."""
    shares, share = shadow_share(tmp_path, "shadow:sort = asc")
    server = smbconf("", shares)
    info = run(server, "share", "allinfo docs\\report.txt")
    assert [ln for ln in info.stdout.splitlines() if ln.startswith("@GMT-")] == [OLDER, OLD], info.stdout
    snapshot(share, "snap-2026-11-30_0815", {"docs/report.txt": b"snapper's\n"})
    (share / ".snapshots" / "snap-2026-11-30_0815").chmod(0o755)
    (share / ".snapshots" / "snap-2026-11-30_0815" / "docs").chmod(0o755)
    shares["share"] += "\nshadow:format = snap-%Y-%m-%d_%H%M"
    other = smbconf("", shares)
    info = run(other, "share", "allinfo docs\\report.txt")
    assert [ln for ln in info.stdout.splitlines() if ln.startswith("@GMT-")] == ["@GMT-2026.11.30-08.15.00"], \
        info.stdout
    got = run(other, "share", f"get @GMT-2026.11.30-08.15.00\\docs\\report.txt {tmp_path / 'got'}")
    assert got.returncode == 0 and (tmp_path / "got").read_bytes() == b"snapper's\n", got.stdout


@pytest.mark.parametrize("option", ["shadow:sort = sideways", "shadow:format = no time in it"])
def test_an_option_that_cannot_be_read_stops_the_server(smbconf, tmp_path, option):
    shares, _share = shadow_share(tmp_path, option)
    with pytest.raises(RuntimeError) as refused:
        smbconf("", shares)
    assert option.split(" =")[0] in str(refused.value), str(refused.value)


@pytest.mark.skipif(os.geteuid() != 0, reason="sessions act as accounts of their own")
def test_a_previous_version_is_read_as_the_session_account(smbconf, tmp_path):
    """A file of a snapshot its account may not read is refused, as the live one would be."""
    shares, share = shadow_share(tmp_path)
    private = share / ".snapshots" / OLD / "docs" / "private.txt"
    private.write_bytes(b"root's only\n")
    os.chmod(private, 0o600)
    server = smbconf("", shares, accounts=True)
    got = run(server, "share", f"get {OLD}\\docs\\report.txt {tmp_path / 'got'}")
    assert got.returncode == 0 and (tmp_path / "got").read_bytes() == b"version two\n", got.stdout + got.stderr
    refused = run(server, "share", f"get {OLD}\\docs\\private.txt {tmp_path / 'got2'}")
    assert "NT_STATUS_ACCESS_DENIED" in refused.stdout + refused.stderr, refused.stdout


@pytest.mark.skipif(not shutil.which("smbtorture"), reason="Samba's smbtorture is not installed")
def test_smbtorture_twrp(smbconf, tmp_path):
    """smbtorture's smb2.twrp: a previous version opened for writing, its WRITE refused
    (write), the share's root opened in a snapshot, and a listing there giving its entries'
    file ids (openroot, listdir). (stream needs a stream in the snapshot: see docs/SERVER.md.)"""
    shares, share = shadow_share(tmp_path)
    for root in (share, share / ".snapshots" / OLD):
        (root / "subdir").mkdir()
        (root / "subdir" / "hardlink").write_bytes(b"x")
        (root / "subdir").chmod(0o755)
    server = smbconf("", shares)
    done = subprocess.run(["smbtorture", "//127.0.0.1/share", "-p", str(server.port), "-U", f"{USER}%{PASSWORD}",
                           f"--option=torture:twrp_snapshot={OLD}", "--option=torture:twrp_file=docs\\report.txt",
                           "smb2.twrp.write", "smb2.twrp.openroot", "smb2.twrp.listdir"],
                          capture_output=True, text=True, timeout=120)
    for test in ("write", "openroot", "listdir"):
        assert f"success: {test}" in done.stdout, done.stdout[-3000:]


@pytest.fixture
def btrfs_volume(tmp_path):
    """A btrfs subvolume on a loop device of its own (root, mkfs.btrfs and a loop device
    needed), whose snapshots keep their files' inodes on another device, as btrfs, ZFS and
    LVM snapshots do."""
    if os.geteuid() != 0 or shutil.which("mkfs.btrfs") is None:
        pytest.skip("needs root and mkfs.btrfs (btrfs-progs)")
    image, mount = tmp_path / "btrfs.img", tmp_path / "btrfs"
    mount.mkdir()
    subprocess.run(["truncate", "-s", "128M", str(image)], check=True)
    subprocess.run(["mkfs.btrfs", "-q", str(image)], check=True, capture_output=True)
    if subprocess.run(["mount", "-o", "loop", str(image), str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a btrfs loop device here")
    try:
        volume = mount / "share"
        subprocess.run(["btrfs", "subvolume", "create", str(volume)], check=True, capture_output=True)
        os.chmod(volume, 0o755)
        yield volume
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_previous_version_of_a_named_stream_is_read(smbconf, tmp_path, btrfs_volume):
    """A file's named stream as a btrfs snapshot holds it (its stream directory answers the
    snapshot's file, same inode on the snapshot's device), with smbclient and smbtorture's
    smb2.twrp.stream; the live stream, changed since, reads as it is now."""
    share = btrfs_volume
    (share / "report.txt").write_bytes(b"today\n")
    (tmp_path / "then").write_bytes(b"stream then\n")
    (tmp_path / "now").write_bytes(b"stream now, longer\n")
    server = smbconf("", {"share": f"path = {share}\nread only = no\nvfs objects = shadow_copy2"})
    put = run(server, "share", f"put {tmp_path / 'then'} report.txt:s1")
    assert put.returncode == 0, put.stdout + put.stderr
    # another file given report.txt's stream id (as a local user could copy it) reaches no
    # stream of report.txt's, in the snapshot either
    (share / "copy.txt").write_bytes(b"other\n")
    os.setxattr(share / "copy.txt", "user.smbring.streams", os.getxattr(share / "report.txt", "user.smbring.streams"))
    (share / ".snapshots").mkdir(mode=0o755)
    subprocess.run(["btrfs", "subvolume", "snapshot", "-r", str(share), str(share / ".snapshots" / OLD)],
                   check=True, capture_output=True)
    assert run(server, "share", f"put {tmp_path / 'now'} report.txt:s1").returncode == 0
    got = run(server, "share", f"get {OLD}\\report.txt:s1 {tmp_path / 'got'}")
    assert got.returncode == 0, got.stdout + got.stderr
    assert (tmp_path / "got").read_bytes() == b"stream then\n"
    run(server, "share", f"get report.txt:s1 {tmp_path / 'got'}")
    assert (tmp_path / "got").read_bytes() == b"stream now, longer\n"
    for name in (f"{OLD}\\copy.txt:s1", "copy.txt:s1"):
        other = run(server, "share", f"get {name} {tmp_path / 'other'}")
        assert other.returncode != 0 and not (tmp_path / "other").exists(), (name, other.stdout)
    done = subprocess.run(["smbtorture", "//127.0.0.1/share", "-p", str(server.port), "-U", f"{USER}%{PASSWORD}",
                           f"--option=torture:twrp_snapshot={OLD}", "--option=torture:twrp_file=report.txt",
                           "--option=torture:twrp_stream=s1", "--option=torture:twrp_stream_size=12",
                           "smb2.twrp.stream"], capture_output=True, text=True, timeout=120)
    assert "success: stream" in done.stdout, done.stdout[-3000:]


def test_a_snapshots_stream_depot_not_the_servers_alone_is_left_as_it_is(smbconf, tmp_path):
    """A stream depot in a snapshot that is not the server's alone (an older version's, or one
    a writer of the snapshot directory made) offers no streams and is not taken over: nothing
    in a previous version changes."""
    shares, share = shadow_share(tmp_path)
    depot = share / ".snapshots" / OLD / ".smbring-streams"
    (depot / "0123456789abcdef").mkdir(parents=True)
    (depot / "0123456789abcdef" / "s1").write_bytes(b"planted\n")
    os.chmod(depot, 0o755)
    os.setxattr(share / ".snapshots" / OLD / "docs" / "report.txt", "user.smbring.streams", b"0123456789abcdef")
    server = smbconf("", shares)
    got = run(server, "share", f"get {OLD}\\docs\\report.txt:s1 {tmp_path / 'got'}")
    assert got.returncode != 0 and not (tmp_path / "got").exists(), got.stdout
    assert depot.stat().st_mode & 0o777 == 0o755
