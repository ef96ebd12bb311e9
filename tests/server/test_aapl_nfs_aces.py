"""Apple's NFS ACEs (AAPL NFS_ACE) and fruit:ignore_zero_aces on shares with `vfs objects =
fruit`, against `smbring serve --config`: once a tree connect's AAPL query is answered, its
security descriptors carry the file's Unix mode, owner and group as MS-NFS ACEs
(S-1-5-88-3-mode, -1-uid, -2-gid), and a descriptor set with a mode ACE changes the file's
permission bits, as Samba's vfs_fruit does. The mode changes only as the kernel lets the
session's account change it: another account, even one a descriptor lets write it, cannot."""
import os
import struct

from smbcore import create_contexts_of
from smbconf_server import OTHER, OTHER_PASSWORD, smbconf  # noqa: F401  (the fixture)
from smbring.smb import aapl, acl, wire
from test_aapl import SHARES, ask, connected, query, write_file

ALL_PARTS = acl.OWNER | acl.GROUP | acl.DACL
FILE_ALL = 0x001F01FF


def descriptor(tree, fid: bytes, parts: int = ALL_PARTS) -> acl.Descriptor:
    r = tree.query_info(fid, wire.INFO_SECURITY, 0, additional=parts)
    assert r.status == wire.STATUS_SUCCESS, r
    return acl.parse(r.buffer(2))


def nfs_aces(sd: acl.Descriptor) -> list[tuple[int, int, int, int]]:
    """(ACE type, mask, kind, value) of each NFS ACE of the DACL."""
    return [(a.type, a.mask, *struct.unpack_from("<II", a.sid, 12)) for a in sd.dacl or ()
            if a.sid[2:12] == acl.sid(5, 88)[2:]]


def set_dacl(tree, fid: bytes, aces: list) -> int:
    sd = acl.Descriptor(control=acl.SE_SELF_RELATIVE | acl.SE_DACL_PRESENT, dacl=aces)
    return tree.set_info(fid, wire.INFO_SECURITY, 0, sd.pack(acl.DACL), additional=acl.DACL).status


def mode_ace(mode: int) -> acl.Ace:
    return acl.Ace(acl.DENIED, 0, 0, acl.sid(5, 88, aapl.NFS_MODE, mode))


def test_descriptors_show_and_set_the_unix_mode_once_negotiated(smbconf):
    """No NFS ACE before the query; after it, exactly one of each (denying nothing), naming
    the file's mode, uid and gid, however many the client sent back; a mode ACE's bits
    become the file's permissions (special bits kept) and no NFS ACE is stored: a tree that
    did not negotiate them sees none."""
    server = smbconf("", SHARES)
    path = server.root / "mac" / "f.txt"
    c, tree = connected(server, "mac")
    with c:
        write_file(tree, "f.txt", b"data")
        fid = tree.open("f.txt", wire.GENERIC_READ | acl.WRITE_DAC | acl.READ_CONTROL)
        assert nfs_aces(descriptor(tree, fid)) == []
        ask(tree, query())
        st = os.stat(path)
        sd = descriptor(tree, fid)
        assert nfs_aces(sd) == [(acl.DENIED, 0, aapl.NFS_MODE, st.st_mode), (acl.DENIED, 0, aapl.NFS_USERS, st.st_uid),
                                (acl.DENIED, 0, aapl.NFS_GROUPS, st.st_gid)]
        assert nfs_aces(descriptor(tree, fid, acl.OWNER)) == []      # (the DACL only where asked)
        extra = [acl.Ace(acl.DENIED, 0, 0, acl.sid(5, 88, aapl.NFS_USERS, 27)),
                 acl.Ace(acl.DENIED, 0, 0, acl.sid(5, 88, aapl.NFS_GROUPS, 300))]
        allowed = [a for a in sd.dacl if a.sid[2:12] != acl.sid(5, 88)[2:]]
        os.chmod(path, 0o2644)
        assert set_dacl(tree, fid, allowed + extra * 2 + [mode_ace(0o100640)]) == wire.STATUS_SUCCESS
        assert os.stat(path).st_mode & 0o7777 == 0o2640
        st = os.stat(path)
        assert nfs_aces(descriptor(tree, fid)) == [(acl.DENIED, 0, aapl.NFS_MODE, st.st_mode),
                                                   (acl.DENIED, 0, aapl.NFS_USERS, st.st_uid),
                                                   (acl.DENIED, 0, aapl.NFS_GROUPS, st.st_gid)]
        # NFS ACEs alone: the mode changes, the DACL stays
        before = [a for a in descriptor(tree, fid).dacl if a.sid[2:12] != acl.sid(5, 88)[2:]]
        assert set_dacl(tree, fid, [mode_ace(0o600)]) == wire.STATUS_SUCCESS
        assert os.stat(path).st_mode & 0o7777 == 0o2600
        assert [a for a in descriptor(tree, fid).dacl if a.sid[2:12] != acl.sid(5, 88)[2:]] == before
        tree.close(fid)
    c, tree = connected(server, "mac")
    with c:
        fid = tree.open("f.txt", wire.GENERIC_READ)
        assert nfs_aces(descriptor(tree, fid)) == []
        tree.close(fid)


def test_a_mode_ace_changes_nothing_for_an_account_that_does_not_own_the_file(smbconf):
    """The owner's descriptor grants another account everything, WRITE_DAC among it: that
    account may set the DACL, but not with a mode ACE, which the kernel refuses it (only the
    owner may chmod): the request is refused whole, the mode and the DACL stay."""
    server = smbconf("", SHARES, users=((OTHER, OTHER_PASSWORD),))
    path = server.root / "mac" / "g.txt"
    c, tree = connected(server, "mac")
    with c:
        write_file(tree, "g.txt", b"data")
        fid = tree.open("g.txt", wire.GENERIC_READ | acl.WRITE_DAC | acl.READ_CONTROL)
        assert set_dacl(tree, fid, [acl.Ace(acl.ALLOWED, 0, FILE_ALL, acl.EVERYONE)]) == wire.STATUS_SUCCESS
        tree.close(fid)
    os.chmod(path, 0o666)
    other = server.raw()
    with other:
        other.negotiate()
        otree = other.tree(other.logon(OTHER, OTHER_PASSWORD), "mac")
        ask(otree, query(), "other-probe")
        fid = otree.open("g.txt", wire.GENERIC_READ | acl.WRITE_DAC | acl.READ_CONTROL)
        status = set_dacl(otree, fid, [acl.Ace(acl.ALLOWED, 0, FILE_ALL, acl.EVERYONE),
                                       acl.Ace(acl.ALLOWED, 0, FILE_ALL, acl.sid(22, 1, 4242)), mode_ace(0o777)])
        assert status == wire.STATUS_ACCESS_DENIED, hex(status)
        # and nothing else of the request was applied either
        assert [a.sid for a in descriptor(otree, fid).dacl if a.type == acl.ALLOWED] == [acl.EVERYONE]
        otree.close(fid)
    assert os.stat(path).st_mode & 0o7777 == 0o666


def test_nfs_aces_off_and_zero_ace_dacls(smbconf):
    """`fruit:nfs_aces = no`: no NFS_ACE offered, no NFS ACE shown, no mode in listings. A
    DACL of no ACEs set on a fruit share leaves the DACL as it was (fruit:ignore_zero_aces,
    Samba's default: macOS sends them meaning no change); with `fruit:ignore_zero_aces = no`,
    and on a share without fruit, it is set (and the file is then closed to everyone)."""
    server = smbconf("fruit:nfs_aces = no",
                     dict(SHARES, strict="read only = no\nvfs objects = fruit\nfruit:ignore_zero_aces = no"))
    for share, ignored in (("mac", True), ("strict", False), ("plain", False)):
        c, tree = connected(server, share)
        with c:
            r = ask(tree, query())
            if share != "plain":
                caps, = struct.unpack_from("<Q", create_contexts_of(r)[b"AAPL"], 16)
                assert not caps & aapl.SUPPORTS_NFS_ACE
            write_file(tree, "z.txt", b"data")
            fid = tree.open("z.txt", wire.GENERIC_READ | acl.WRITE_DAC | acl.READ_CONTROL)
            assert nfs_aces(descriptor(tree, fid)) == []
            assert set_dacl(tree, fid, []) == wire.STATUS_SUCCESS
            tree.close(fid)
            r = tree.create("z.txt", wire.GENERIC_READ)
            assert (r.status == wire.STATUS_SUCCESS) == ignored, (share, r)
            if ignored:
                tree.close(r.file_id)


def test_malformed_nfs_sids_are_taken_out_and_change_nothing(smbconf):
    """SIDs in S-1-5-88 that are no whole NFS ACE (no kind, a mode ACE without its mode, a
    kind no one defined) are taken out like the others and set no mode; a mode beyond the
    permission bits gives only those."""
    server = smbconf("", SHARES)
    path = server.root / "mac" / "h.txt"
    c, tree = connected(server, "mac")
    with c:
        write_file(tree, "h.txt", b"data")
        os.chmod(path, 0o640)
        ask(tree, query())
        fid = tree.open("h.txt", wire.GENERIC_READ | acl.WRITE_DAC | acl.READ_CONTROL)
        keep = acl.Ace(acl.ALLOWED, 0, FILE_ALL, acl.EVERYONE)
        odd = [acl.Ace(acl.DENIED, 0, 0, sid) for sid in
               (acl.sid(5, 88), acl.sid(5, 88, aapl.NFS_MODE), acl.sid(5, 88, 9, 0o777))]
        assert set_dacl(tree, fid, [keep] + odd) == wire.STATUS_SUCCESS
        assert os.stat(path).st_mode & 0o7777 == 0o640
        assert [a.sid for a in descriptor(tree, fid).dacl if a.type == acl.ALLOWED] == [acl.EVERYONE]
        assert len(nfs_aces(descriptor(tree, fid))) == 3
        assert set_dacl(tree, fid, [keep, mode_ace(0xFFFFFFFF)]) == wire.STATUS_SUCCESS
        assert os.stat(path).st_mode & 0o7777 == 0o777
        tree.close(fid)
