"""Who may change a file's security descriptor, on a server started as root acting as real
Unix accounts, through smbprotocol: as the kernel lets only a file's owner (or root) chmod
and chown it, and as Samba maps a file's mode bits to a DACL in which only the owner holds
WRITE_DAC and WRITE_OWNER, a file without a stored descriptor gives those two rights to its
Unix owner and to root only. A user the mode bits let write the file (his group's) gets
STATUS_ACCESS_DENIED for them, MAXIMUM_ALLOWED without them, and stores no descriptor. A
stored descriptor's owner SID gives no rights of its own (the Unix owner holds the owner's);
it may name only the file's Unix owner (root: anyone), else STATUS_INVALID_OWNER. An ACE
that grants WRITE_DAC still lets its user change the DACL."""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1]))
from servers import spawn_for_accounts, stop, unix_accounts  # noqa: E402

if os.geteuid() != 0 or not shutil.which("useradd"):
    pytest.skip("acting as Unix accounts needs root (and useradd)", allow_module_level=True)
pytest.importorskip("smbprotocol")

from smbprotocol.create_contexts import CreateContextName, SMB2CreateContextRequest  # noqa: E402
from smbprotocol_user import UserClient, create_context  # noqa: E402

from smbring.smb import acl  # noqa: E402

PASSWORD = "Sd-rights1"
SUFFIX = f"{os.getpid() % 100000}"
ALICE, BOB, CAROL = f"srsa{SUFFIX}", f"srsb{SUFFIX}", f"srsc{SUFFIX}"
SD_XATTR = "user.smbring.sd"

READ_DATA, WRITE_DATA = 0x1, 0x2
DELETE, READ_CONTROL, WRITE_DAC, WRITE_OWNER = 0x10000, 0x20000, 0x40000, 0x80000
MAXIMUM_ALLOWED, GENERIC_ALL = 0x02000000, 0x10000000
FILE_READ, FILE_ALL = 0x001200A9, 0x001F01FF
OPEN, CREATE, OPEN_IF, OVERWRITE, OVERWRITE_IF, SUPERSEDE = 1, 2, 3, 4, 5, 0
DIRECTORY_FILE = 0x1
OWNER_PART, DACL_PART = 0x1, 0x4
ACCESS_DENIED, INVALID_OWNER = 0xC0000022, 0xC000005A


@pytest.fixture(scope="module")
def accounts():
    yield from unix_accounts(ALICE, BOB, CAROL)


@pytest.fixture(scope="module")
def server(accounts, tmp_path_factory):
    """share/ (root's 0755) with shared/ (0777), where each test puts the files it needs; a
    second share `asroot` on the same directory, `force user = root`."""
    tmp = tmp_path_factory.mktemp("sd-rights")
    top = Path(tempfile.mkdtemp(prefix="smbring-sd-rights-", dir="/tmp"))
    top.chmod(0o755)
    share = top / "share"
    shared = share / "shared"
    shared.mkdir(parents=True)
    share.chmod(0o755)
    shared.chmod(0o777)     # (not sticky: BOB may delete what he may write; only the DACL rights are his no more)
    proc, port, log = spawn_for_accounts(tmp, share, (ALICE, BOB, CAROL), PASSWORD,
                                         more=f"[asroot]\npath = {share}\nread only = no\nforce user = root\n")
    try:
        yield {"port": port, "share": share, "shared": shared, "accounts": accounts, "log": log}
    finally:
        stop(proc)
        shutil.rmtree(top, ignore_errors=True)


def alices_file(server, name: str, mode: int = 0o664, directory: bool = False) -> Path:
    """shared/name: ALICE's, BOB's group (so the mode's group bits are BOB's), no stored
    descriptor."""
    path = server["shared"] / name
    if directory:
        path.mkdir()
    else:
        path.write_text(f"{name} of alice")
    path.chmod(mode)
    os.chown(path, server["accounts"][ALICE][0], server["accounts"][BOB][1])
    return path


def stored(path: Path) -> bytes | None:
    try:
        return os.getxattr(path, SD_XATTR)
    except OSError:
        return None


def client(server, user: str, share: str = "share") -> UserClient:
    return UserClient("127.0.0.1", server["port"], user, PASSWORD, share)


def user_sid(server, who: str) -> bytes:
    return acl.sid(22, 1, server["accounts"][who][0])


def dacl(*aces: tuple[int, bytes]) -> bytes:
    """A self-relative descriptor with a DACL only, of allowing ACEs (mask, SID)."""
    return acl.Descriptor(control=acl.SE_SELF_RELATIVE | acl.SE_DACL_PRESENT,
                          dacl=[acl.Ace(acl.ALLOWED, 0, mask, who) for mask, who in aces]).pack()


def owned_by(owner: bytes) -> bytes:
    """A self-relative descriptor naming an owner only."""
    return acl.Descriptor(owner=owner).pack(acl.OWNER)


def sd_context(descriptor: bytes) -> SMB2CreateContextRequest:
    return create_context(CreateContextName.SMB2_CREATE_SD_BUFFER, descriptor)


# -- a file without a stored descriptor: WRITE_DAC and WRITE_OWNER are its owner's ---------------
@pytest.mark.parametrize("access", [WRITE_DAC, WRITE_OWNER, READ_DATA | WRITE_DAC, WRITE_DATA | WRITE_OWNER,
                                    GENERIC_ALL, FILE_ALL, MAXIMUM_ALLOWED | WRITE_DAC])
def test_a_group_writer_is_refused_write_dac_and_write_owner(server, access):
    """grouped.txt: ALICE's, 0664, BOB's group: the kernel lets BOB write it, not chmod it."""
    name = f"refused-{access:x}.txt"
    alices_file(server, name)
    with client(server, BOB) as c:
        assert c.status(rf"shared\{name}", READ_DATA | WRITE_DATA) == 0
        assert c.status(rf"shared\{name}", access) == ACCESS_DENIED


def test_maximum_allowed_gives_a_group_writer_all_but_write_dac_and_write_owner(server):
    alices_file(server, "maximum.txt")
    with client(server, BOB) as c:
        f = c.open(r"shared\maximum.txt", MAXIMUM_ALLOWED)
        granted = c.granted(f)
        f.close()
        assert granted & (READ_DATA | WRITE_DATA | READ_CONTROL) == READ_DATA | WRITE_DATA | READ_CONTROL
        assert not granted & (WRITE_DAC | WRITE_OWNER), hex(granted)
        most = c.maximal_access(r"shared\maximum.txt")
        assert most & WRITE_DATA and not most & (WRITE_DAC | WRITE_OWNER), hex(most)


def test_a_group_writer_stores_no_descriptor(server):
    """BOB, through any handle he can get (his MAXIMUM_ALLOWED, a write open, a stream he
    makes on the file), may not store a DACL that leaves ALICE out of her own file."""
    path = alices_file(server, "lockout.txt")
    bob = user_sid(server, BOB)
    with client(server, BOB) as c:
        for name, access, disposition in ((r"shared\lockout.txt", MAXIMUM_ALLOWED, OPEN),
                                          (r"shared\lockout.txt", READ_DATA | WRITE_DATA | READ_CONTROL, OPEN),
                                          (r"shared\lockout.txt:new", MAXIMUM_ALLOWED, OPEN_IF)):
            f = c.open(name, access, disposition)
            assert c.set_sd(f, dacl((FILE_ALL, bob)), DACL_PART) == ACCESS_DENIED, name
            assert c.set_sd(f, owned_by(bob), OWNER_PART) == ACCESS_DENIED, name
            f.close()
        assert c.status(r"shared\lockout.txt:other", WRITE_DAC, OPEN_IF) == ACCESS_DENIED
        assert c.status(r"shared\lockout.txt:new", WRITE_DAC) == ACCESS_DENIED       # (made above)
        assert c.maximal_access(r"shared\lockout.txt:new") & (WRITE_DAC | WRITE_OWNER) == 0
    assert stored(path) is None
    with client(server, ALICE) as c:
        assert c.status(r"shared\lockout.txt", READ_DATA | WRITE_DATA) == 0


def test_a_group_writer_is_refused_write_dac_on_a_directory(server):
    alices_file(server, "groupdir", 0o2775, directory=True)
    with client(server, BOB) as c:
        assert c.status(r"shared\groupdir", WRITE_DAC, options=DIRECTORY_FILE) == ACCESS_DENIED
        d = c.open(r"shared\groupdir", MAXIMUM_ALLOWED, options=DIRECTORY_FILE)
        assert not c.granted(d) & (WRITE_DAC | WRITE_OWNER)
        d.close()
        assert c.status(r"shared\groupdir\bobs.txt", READ_DATA | WRITE_DATA, CREATE) == 0


def test_the_owner_may_change_her_file_s_descriptor(server):
    """ALICE (the Unix owner) gets WRITE_DAC and WRITE_OWNER, stores a DACL leaving BOB out,
    and keeps WRITE_DAC and READ_CONTROL though her DACL grants her nothing."""
    path = alices_file(server, "owners.txt")
    with client(server, ALICE) as c:
        f = c.open(r"shared\owners.txt", MAXIMUM_ALLOWED)
        assert c.granted(f) & (WRITE_DAC | WRITE_OWNER) == WRITE_DAC | WRITE_OWNER
        assert c.maximal_access(r"shared\owners.txt") & (WRITE_DAC | WRITE_OWNER) == WRITE_DAC | WRITE_OWNER
        assert c.set_sd(f, dacl((FILE_READ, acl.sid(22, 1, 999999))), DACL_PART) == 0
        f.close()
        assert c.status(r"shared\owners.txt", READ_CONTROL | WRITE_DAC) == 0
        assert c.status(r"shared\owners.txt", WRITE_OWNER) == ACCESS_DENIED     # (not in her DACL)
    assert stored(path)
    with client(server, BOB) as c:
        assert c.status(r"shared\owners.txt", READ_DATA) == ACCESS_DENIED


def test_root_may_change_anyone_s_descriptor(server):
    """BOB on `asroot` acts as root: as Samba, root gets WRITE_DAC and WRITE_OWNER on any file
    and may name any owner."""
    path = alices_file(server, "roots.txt", 0o600)
    carol = user_sid(server, CAROL)
    with client(server, BOB, "asroot") as c:
        f = c.open(r"shared\roots.txt", READ_CONTROL | WRITE_DAC | WRITE_OWNER)
        assert c.set_sd(f, dacl((FILE_ALL, carol)), DACL_PART) == 0
        assert c.set_sd(f, owned_by(carol), OWNER_PART) == 0
        assert acl.parse(c.sd(f)).owner == carol
        f.close()
        # the DACL names neither root nor its owner: root holds the owner's rights still
        assert c.status(r"shared\roots.txt", READ_CONTROL | WRITE_DAC) == 0
    assert stored(path)


# -- the owner a stored descriptor names --------------------------------------------------------
def test_an_owner_sid_gives_no_rights_and_names_only_the_unix_owner(server):
    """shared-sd.txt: ALICE's, with a DACL of hers granting BOB full control (WRITE_OWNER
    included). BOB may not name himself or CAROL as the owner (STATUS_INVALID_OWNER); ALICE
    may not give her file away to BOB either. With BOB named the owner, BOB still gets
    no owner's rights from it (ALICE, the Unix owner, does), so once ALICE's DACL leaves him
    out he can change it no more. (Root naming anyone: test_root_may_change_anyone_s_descriptor.)"""
    path = alices_file(server, "shared-sd.txt")
    alice, bob, carol = user_sid(server, ALICE), user_sid(server, BOB), user_sid(server, CAROL)
    with client(server, ALICE) as c:
        f = c.open(r"shared\shared-sd.txt", READ_CONTROL | WRITE_DAC | WRITE_OWNER)
        assert c.set_sd(f, dacl((FILE_ALL, bob), (FILE_READ, alice)), DACL_PART) == 0
        assert c.set_sd(f, owned_by(bob), OWNER_PART) == INVALID_OWNER
        assert c.set_sd(f, owned_by(alice), OWNER_PART) == 0
        f.close()
    with client(server, BOB) as c:
        f = c.open(r"shared\shared-sd.txt", READ_CONTROL | WRITE_DAC | WRITE_OWNER)
        for who in (bob, carol):
            assert c.set_sd(f, owned_by(who), OWNER_PART) == INVALID_OWNER
        assert acl.parse(c.sd(f)).owner == alice
        assert c.set_sd(f, owned_by(alice), OWNER_PART) == 0        # (as it is)
        # (b) the ACE grants BOB WRITE_DAC: he may change the DACL, as it says
        assert c.set_sd(f, dacl((FILE_ALL, bob), (FILE_ALL, alice)), DACL_PART) == 0
        f.close()
    # BOB named the owner (as root may, or an older version let anyone): on disk, as root
    renamed = acl.parse(stored(path))
    renamed.owner = bob
    os.setxattr(path, SD_XATTR, renamed.pack())
    with client(server, ALICE) as c:
        f = c.open(r"shared\shared-sd.txt", READ_CONTROL | WRITE_DAC)
        assert acl.parse(c.sd(f)).owner == bob
        assert c.set_sd(f, dacl((FILE_READ, bob)), DACL_PART) == 0     # ALICE: none in the DACL
        f.close()
    with client(server, BOB) as c:
        for access in (WRITE_DAC, READ_CONTROL | WRITE_DAC, WRITE_OWNER):
            assert c.status(r"shared\shared-sd.txt", access) == ACCESS_DENIED, hex(access)
        f = c.open(r"shared\shared-sd.txt", MAXIMUM_ALLOWED)
        assert not c.granted(f) & (WRITE_DAC | WRITE_OWNER)
        f.close()
    assert acl.parse(stored(path)).dacl == [acl.Ace(acl.ALLOWED, 0, FILE_READ, bob)]


def test_a_new_file_s_descriptor_names_its_creator_as_owner(server):
    """A CREATE's SecD context may name the creator as the owner, or nobody (the creator
    then); another user: STATUS_INVALID_OWNER, and no file is made."""
    bob, carol = user_sid(server, BOB), user_sid(server, CAROL)
    with client(server, BOB) as c:
        def owned(owner: bytes) -> bytes:
            return acl.Descriptor(owner=owner, control=acl.SE_SELF_RELATIVE | acl.SE_DACL_PRESENT,
                                  dacl=[acl.Ace(acl.ALLOWED, 0, FILE_ALL, bob)]).pack()
        assert c.status(r"shared\bob-foreign.txt", READ_DATA | WRITE_DATA, CREATE,
                        contexts=[sd_context(owned(carol))]) == INVALID_OWNER
        assert not (server["shared"] / "bob-foreign.txt").exists()
        own = owned(bob)
        f = c.open(r"shared\bob-own.txt", READ_CONTROL | WRITE_DAC, CREATE, contexts=[sd_context(own)])
        assert acl.parse(c.sd(f)).owner == bob
        f.close()
        f = c.open(r"shared\bob-none.txt", READ_CONTROL, CREATE, contexts=[sd_context(dacl((FILE_ALL, bob)))])
        assert acl.parse(c.sd(f)).owner == bob
        f.close()


# -- a CREATE's SecD context on an existing file -----------------------------------------------
@pytest.mark.parametrize("disposition", [SUPERSEDE, OPEN_IF, OVERWRITE, OVERWRITE_IF])
def test_a_secd_context_does_not_replace_an_existing_file_s_descriptor(server, disposition):
    """BOB may write (and overwrite) ALICE's 0664 file, with and without a DACL of hers that
    lets him write it; the descriptor a CREATE of his sends is not stored over either."""
    bob = user_sid(server, BOB)
    plain = alices_file(server, f"secd-plain-{disposition}.txt")
    with_sd = alices_file(server, f"secd-stored-{disposition}.txt")
    with client(server, ALICE) as c:
        f = c.open(rf"shared\{with_sd.name}", WRITE_DAC)
        assert c.set_sd(f, dacl((FILE_ALL, user_sid(server, ALICE)), (0x0012019F, bob)), DACL_PART) == 0
        f.close()
    before = stored(with_sd)
    mine = dacl((FILE_ALL, bob))
    with client(server, BOB) as c:
        for path in (plain, with_sd):
            assert c.status(rf"shared\{path.name}", READ_DATA | WRITE_DATA, disposition,
                            contexts=[sd_context(mine)]) == 0
    assert stored(plain) is None
    assert stored(with_sd) == before


# -- inherited descriptors on new files: unchanged -----------------------------------------------
def test_inherited_descriptors_still_decide_new_files(server):
    """ALICE's directory with an inheritable DACL (BOB may add files, read and write them, not
    change their DACL): BOB's new file inherits it, and BOB, the new file's owner, keeps
    WRITE_DAC on it as its owner."""
    alices_file(server, "inheriting", 0o777, directory=True)
    alice, bob = user_sid(server, ALICE), user_sid(server, BOB)
    inheritable = acl.Descriptor(control=acl.SE_SELF_RELATIVE | acl.SE_DACL_PRESENT, dacl=[
        acl.Ace(acl.ALLOWED, acl.OBJECT_INHERIT | acl.CONTAINER_INHERIT, FILE_ALL, alice),
        acl.Ace(acl.ALLOWED, acl.OBJECT_INHERIT | acl.CONTAINER_INHERIT, 0x0012019F, bob)]).pack()
    with client(server, ALICE) as c:
        d = c.open(r"shared\inheriting", WRITE_DAC, options=DIRECTORY_FILE)
        assert c.set_sd(d, inheritable, DACL_PART) == 0
        d.close()
    with client(server, BOB) as c:
        f = c.open(r"shared\inheriting\bobs.txt", READ_DATA | WRITE_DATA | READ_CONTROL, CREATE)
        sd = acl.parse(c.sd(f))
        f.close()
        assert sd.owner == bob
        assert [(a.sid, a.mask) for a in sd.dacl] == [(alice, FILE_ALL), (bob, 0x0012019F)]
        assert c.status(r"shared\inheriting\bobs.txt", WRITE_DAC) == 0
    with client(server, ALICE) as c:     # ALICE's ACE: full control, WRITE_DAC included
        assert c.status(r"shared\inheriting\bobs.txt", WRITE_DAC) == 0
