"""Who a session acts as, with Samba's smbclient and real Unix accounts: `force user`,
`force group` (and `+group`), a `guest account` other than nobody, and `admin users` (root
on their share). The server runs as root and acts as each account, so the
kernel's own permission checks decide; each test also checks that what was refused left the
directory as it was."""
from __future__ import annotations

import os

import pytest
from smbring.smb import acl
from smbring.vfs.posix import SD_XATTR
from smbconf_fixtures import TAG, need_root_and_samba, output, refused, serve, snapshot, unix_accounts

need_root_and_samba()

PASSWORD = "Clients-pw1"
USER = f"sclu{TAG}"          # logs on with a password, member of nothing special
MEMBER = f"sclm{TAG}"        # logs on with a password, member of GROUP
FORCED = f"sclf{TAG}"        # force user of [forced]
GUEST = f"sclg{TAG}"         # the guest account
GROUP = f"sclgr{TAG}"        # force group of [forced], [fgroup] and (+) [fplus]


def chown(path, account_or_ids, gid=None, mode=None):
    uid, g = (account_or_ids.uid, account_or_ids.gid) if hasattr(account_or_ids, "uid") else account_or_ids
    os.chown(path, uid, g if gid is None else gid)
    if mode is not None:
        path.chmod(mode)


def file(path, text, owner, mode, gid=None):
    path.write_text(text)
    chown(path, owner, gid, mode)
    return path


@pytest.fixture(scope="module")
def accounts():
    with unix_accounts({USER: (), MEMBER: (GROUP,), FORCED: (), GUEST: ()}, groups=(GROUP,)) as made:
        import grp
        made["group_gid"] = grp.getgrnam(GROUP).gr_gid
        yield made


@pytest.fixture(scope="module")
def server(accounts, tmp_path_factory):
    """One server for the module:
    [forced]  force user FORCED, force group GROUP; its directory FORCED's 0700: only FORCED
              may create in it; forced600.txt (FORCED 0600), root600.txt, user600.txt (USER's)
    [fgroup]  force group GROUP; a 1777 directory; group640.txt (root:GROUP 0640)
    [fplus]   force group +GROUP (members only); a 1777 directory
    [pub]     guest ok; GUEST's 0755 directory with guest600.txt (GUEST's) and root600.txt,
              and a root 0755 subdirectory
    """
    tmp = tmp_path_factory.mktemp("clients-identity")
    root = tmp / "shares"
    root.mkdir()
    root.chmod(0o755)
    gid = accounts["group_gid"]
    forced, fgroup, fplus, pub = (root / n for n in ("forced", "fgroup", "fplus", "pub"))
    for d in (forced, fgroup, fplus, pub):
        d.mkdir()
    chown(forced, accounts[FORCED], mode=0o700)
    file(forced / "forced600.txt", "forced's own", accounts[FORCED], 0o600)
    file(forced / "root600.txt", "root's own", (0, 0), 0o600)
    file(forced / "user600.txt", "the user's own", accounts[USER], 0o600)
    fgroup.chmod(0o1777)
    fplus.chmod(0o1777)
    file(fgroup / "group640.txt", "for the group", (0, gid), 0o640)
    chown(pub, accounts[GUEST], mode=0o755)
    file(pub / "guest600.txt", "the guest's own", accounts[GUEST], 0o600)
    file(pub / "root600.txt", "root's own", (0, 0), 0o600)
    (pub / "rootdir").mkdir()
    (pub / "rootdir").chmod(0o755)
    shares = {
        "forced": f"path = {forced}\nread only = no\nforce user = {FORCED}\nforce group = {GROUP}",
        "fgroup": f"path = {fgroup}\nread only = no\nforce group = {GROUP}",
        "fplus": f"path = {fplus}\nread only = no\nforce group = +{GROUP}",
        "pub": f"path = {pub}\nread only = no\nguest ok = yes",
    }
    with serve(tmp / "run", f"guest account = {GUEST}\nmap to guest = bad user", shares,
               {USER: PASSWORD, MEMBER: PASSWORD}) as served:
        served.paths = {"forced": forced, "fgroup": fgroup, "fplus": fplus, "pub": pub}
        yield served


@pytest.fixture
def src(tmp_path):
    path = tmp_path / "src.txt"
    path.write_text("from the client")
    return path


def owner(path):
    st = path.stat()
    return st.st_uid, st.st_gid


# -- force user / force group ---------------------------------------------------------------
def test_force_user_owns_what_a_real_user_creates(server, accounts, src):
    r = server.smbclient("forced", f"put {src} made.txt; mkdir madedir", user=USER)
    assert r.returncode == 0 and "NT_STATUS" not in output(r), output(r)
    # only FORCED may create in its 0700 directory: USER's own account could not have
    expected = (accounts[FORCED].uid, accounts["group_gid"])
    assert owner(server.paths["forced"] / "made.txt") == expected
    assert owner(server.paths["forced"] / "madedir") == expected


def test_force_user_rights_are_the_forced_accounts(server, tmp_path):
    got = tmp_path / "got"
    r = server.smbclient("forced", f"get forced600.txt {got}", user=USER)
    assert r.returncode == 0 and got.read_text() == "forced's own", output(r)
    got.unlink()
    before = snapshot(server.paths["forced"])
    # root's file, and USER's own file: FORCED may read neither
    for name in ("root600.txt", "user600.txt"):
        r = server.smbclient("forced", f"get {name} {got}", user=USER)
        assert refused(r), (name, output(r))
        assert not got.exists()
    # nor delete or overwrite them: the kernel refuses FORCED, and the files stay
    for command in ("del root600.txt", "rename user600.txt taken.txt"):
        r = server.smbclient("forced", command, user=USER)
        assert refused(r), (command, output(r))
    assert snapshot(server.paths["forced"]) == before


def test_force_group_is_the_primary_group_of_new_files(server, accounts, src, tmp_path):
    r = server.smbclient("fgroup", f"put {src} by-user.txt", user=USER)
    assert r.returncode == 0, output(r)
    assert owner(server.paths["fgroup"] / "by-user.txt") == (accounts[USER].uid, accounts["group_gid"])
    # USER is no member of GROUP, yet the forced group's rights apply
    got = tmp_path / "got"
    r = server.smbclient("fgroup", f"get group640.txt {got}", user=USER)
    assert r.returncode == 0 and got.read_text() == "for the group", output(r)


def test_force_group_plus_applies_to_members_only(server, accounts, src, tmp_path):
    for user, gid in ((USER, accounts[USER].gid), (MEMBER, accounts["group_gid"])):
        r = server.smbclient("fplus", f"put {src} by-{user}.txt", user=user)
        assert r.returncode == 0, output(r)
        assert owner(server.paths["fplus"] / f"by-{user}.txt") == (accounts[user].uid, gid), user


# -- guest account ----------------------------------------------------------------------------
@pytest.mark.parametrize("who", ["anonymous", "bad-user"])
def test_guests_act_as_the_guest_account(server, accounts, src, tmp_path, who):
    kw = {"user": None} if who == "anonymous" else {"user": f"stranger{TAG}", "password": "x"}
    made = f"by-{who}.txt"
    r = server.smbclient("pub", f"put {src} {made}", **kw)
    assert r.returncode == 0, output(r)
    assert owner(server.paths["pub"] / made) == (accounts[GUEST].uid, accounts[GUEST].gid)
    got = tmp_path / "got"
    r = server.smbclient("pub", f"get guest600.txt {got}", **kw)      # the guest account's own
    assert r.returncode == 0 and got.read_text() == "the guest's own", output(r)
    got.unlink()
    before = snapshot(server.paths["pub"])
    for command in (f"get root600.txt {got}", f"put {src} rootdir\\in-root.txt", "mkdir rootdir\\sub",
                    "del root600.txt"):
        r = server.smbclient("pub", command, **kw)
        assert refused(r), (command, output(r))
    assert not got.exists()
    assert snapshot(server.paths["pub"]) == before


# -- admin users --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def admin_server(accounts, tmp_path_factory):
    """[adm] with `admin users = MEMBER`: a 0700 directory of root's holding root600.txt; and
    [admro], the same directory read-only. USER is no admin user there."""
    tmp = tmp_path_factory.mktemp("admin-users")
    adm = tmp / "adm"
    adm.mkdir()
    chown(adm, (0, 0), mode=0o700)
    tmp.chmod(0o755)
    file(adm / "root600.txt", "root's own", (0, 0), 0o600)
    # a file whose security descriptor (as a client's SET_INFO stores it) denies Everyone all
    denied = file(adm / "denied.txt", "denied to all", (0, 0), 0o644)
    everyone_denied = acl.Descriptor(acl.SE_SELF_RELATIVE | acl.SE_DACL_PRESENT, acl.ROOT_SID,
                                     acl.sid(22, 2, 0), [acl.Ace(acl.DENIED, 0, acl.FILE_ALL_ACCESS, acl.EVERYONE)])
    os.setxattr(denied, SD_XATTR, everyone_denied.pack())
    shares = {"adm": f"path = {adm}\nread only = no\nadmin users = {MEMBER}",
              "admro": f"path = {adm}\nread only = yes\nadmin users = @{GROUP}",
              "asroot": f"path = {adm}\nread only = no\nforce user = root"}
    with serve(tmp / "run", "", shares, {USER: PASSWORD, MEMBER: PASSWORD}) as served:
        served.paths = {"adm": adm}
        yield served


def test_admin_users_act_as_root_on_the_share(admin_server, accounts, src, tmp_path):
    """An admin user reads root's 0600 file in root's 0700 directory and makes files there,
    owned by root (with the user's own primary group, as smbd keeps it)."""
    got = tmp_path / "got"
    r = admin_server.smbclient("adm", f"get root600.txt {got}; put {src} by-admin.txt", user=MEMBER)
    assert r.returncode == 0 and got.read_text() == "root's own", output(r)
    assert owner(admin_server.paths["adm"] / "by-admin.txt") == (0, accounts[MEMBER].gid)


def test_admin_users_pass_a_descriptor_that_denies_everyone(admin_server, tmp_path):
    """As smbd's root override: a descriptor's deny ACE stops no admin user (on a read-only
    share too); a session acting as root otherwise ([asroot]: force user = root) still
    meets it."""
    for share in ("adm", "admro"):
        got = tmp_path / f"got-{share}"
        r = admin_server.smbclient(share, f"get denied.txt {got}", user=MEMBER)
        assert r.returncode == 0 and got.read_text() == "denied to all", (share, output(r))
    got = tmp_path / "got-asroot"
    r = admin_server.smbclient("asroot", f"get root600.txt {got}", user=MEMBER)
    assert r.returncode == 0 and got.read_text() == "root's own", output(r)     # root there
    r = admin_server.smbclient("asroot", f"get denied.txt {tmp_path / 'denied'}", user=MEMBER)
    assert "NT_STATUS_ACCESS_DENIED" in output(r), output(r)
    assert not (tmp_path / "denied").exists()


def test_a_user_not_in_admin_users_acts_as_itself(admin_server, tmp_path, src):
    got = tmp_path / "got"
    before = snapshot(admin_server.paths["adm"])
    for command in (f"get root600.txt {got}", f"put {src} by-user.txt", "del root600.txt"):
        r = admin_server.smbclient("adm", command, user=USER)
        assert refused(r) or "NT_STATUS_" in output(r), (command, output(r))
    assert not got.exists()
    assert snapshot(admin_server.paths["adm"]) == before


def test_admin_users_do_not_make_a_read_only_share_writable(admin_server, tmp_path, src):
    """(A member of the group named `@GROUP` reads as root, and writes nothing.)"""
    got = tmp_path / "got"
    before = snapshot(admin_server.paths["adm"])
    r = admin_server.smbclient("admro", f"get root600.txt {got}", user=MEMBER)
    assert r.returncode == 0 and got.read_text() == "root's own", output(r)
    for command in (f"put {src} by-admin-ro.txt", "del root600.txt"):
        r = admin_server.smbclient("admro", command, user=MEMBER)
        assert refused(r), (command, output(r))
    assert snapshot(admin_server.paths["adm"]) == before
