"""Who a logon is, whatever the client typed: a name in another case reaches the account as
Samba finds it (the password file in any case, an exact spelling first; the Unix account as
written, in lower case, in upper case), acts as that account's uid, and its password only
logs it on. Lease breaks go to any connection of the client logged on as the same resolved
account (another spelling, a username-map alias), never to another account's."""
from __future__ import annotations

import os
import pwd
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "security"))
from servers import PASSWORD, USER, free_port, spawn, stop  # noqa: E402
from servers import smbclient as run_smbclient  # noqa: E402
from smbcore import create_body  # noqa: E402
from test_break_channels import LEASE, READ_WRITE, H, R, W, next_break, start_open  # noqa: E402
from test_sessions_multichannel import connect  # noqa: E402

from smbring.server.users import PasswordLookup  # noqa: E402
from smbring.smb import wire  # noqa: E402
from smbring.smb.ntlm_crypto import nt_hash  # noqa: E402

SUFFIX = f"{os.getpid() % 100000}"
NAME, OTHER = f"srna{SUFFIX}", f"srnb{SUFFIX}"      # Unix accounts, lower case
WRONG = "Not-the-pw9"


def add_user(env: dict, name: str, password: str = PASSWORD) -> None:
    subprocess.run([sys.executable, "-m", "smbring.cli", "user", "add", name, "--password-stdin"],
                   input=password + "\n", text=True, check=True, env=env, capture_output=True)


# -- the password file: one line per spelling, exact first ---------------------------------------
def test_an_exact_spelling_reaches_its_own_line_before_an_earlier_one_in_another_case(tmp_path):
    passdb = tmp_path / "smbpasswd"
    upper, lower = nt_hash("upper").hex().upper(), nt_hash("lower").hex().upper()
    passdb.write_text(f"EVE:1:{'X' * 32}:{upper}:[U          ]:LCT-00000000:\n"
                      f"eve:2:{'X' * 32}:{lower}:[U          ]:LCT-00000000:\n")
    lookup = PasswordLookup(str(passdb))
    assert lookup("eve") == nt_hash("lower") and lookup("eve").account == "eve"
    assert lookup("EVE") == nt_hash("upper") and lookup("EVE").account == "EVE"
    assert lookup("Eve") == nt_hash("upper") and lookup("Eve").account == "EVE"   # the first


def test_a_refused_exact_line_is_not_passed_over_for_another_spelling(tmp_path):
    passdb = tmp_path / "smbpasswd"
    h = nt_hash("pw").hex().upper()
    passdb.write_text(f"Eve:1:{'X' * 32}:{h}:[U          ]:LCT-00000000:\n"
                      f"eve:2:{'X' * 32}:{h}:[DU         ]:LCT-00000000:\n")
    lookup = PasswordLookup(str(passdb))
    assert lookup("eve").barred is not None and lookup("eve").account == "eve"
    assert lookup("Eve").barred is None and lookup("Eve").account == "Eve"


# -- a root server acting as the accounts ---------------------------------------------------------
def run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, text=True)


@pytest.fixture(scope="module")
def cased(tmp_path_factory):
    """A root server as the accounts (no username map): NAME in the password file as NAME,
    OTHER only as its capitalised spelling."""
    if os.geteuid() != 0 or not shutil.which("useradd"):
        pytest.skip("acting as Unix accounts needs root (and useradd)")
    made = []
    tmp = tmp_path_factory.mktemp("names")
    reachable = Path(tempfile.mkdtemp(prefix="smbring-names-", dir="/tmp"))
    reachable.chmod(0o755)
    share = reachable / "share"
    share.mkdir()
    share.chmod(0o1777)
    proc = None
    try:
        for name in (NAME, OTHER):
            run("useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", "--user-group", name)
            made.append(name)
        env = dict(os.environ, SMBRING_PASSDB=str(tmp / "passdb"))
        add_user(env, NAME)
        add_user(env, OTHER.capitalize())
        proc, port, log = spawn(tmp, str(share), "--share", "share", accounts=True)
        yield {"port": port, "share": share, "log": log}
    finally:
        if proc is not None:
            stop(proc)
        for name in made:
            subprocess.run(["userdel", name], capture_output=True)
        shutil.rmtree(reachable, ignore_errors=True)


def put(server, user: str, password: str, name: str, tmp_path) -> subprocess.CompletedProcess:
    local = tmp_path / "local"
    local.write_text("x")
    return run_smbclient(server, f"put {local} {name}", user=user, password=password)


@pytest.mark.parametrize("spelling", [NAME.upper(), NAME.capitalize(), f"SOMEDOMAIN\\{NAME.upper()}"],
                         ids=["upper", "capitalised", "domain-upper"])   # ids alike in every process
def test_a_name_in_another_case_logs_on_as_the_account(cased, spelling, tmp_path):
    target = f"by-{len(spelling)}-{sum(c.isupper() for c in spelling)}.txt"   # (names match in any case)
    r = put(cased, spelling, PASSWORD, target, tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (cased["share"] / target).stat().st_uid == pwd.getpwnam(NAME).pw_uid


def test_a_name_in_another_case_with_a_wrong_password_is_refused(cased, tmp_path):
    r = put(cased, NAME.upper(), WRONG, "wrong.txt", tmp_path)
    assert "NT_STATUS_LOGON_FAILURE" in r.stdout + r.stderr, r
    assert not (cased["share"] / "wrong.txt").exists()


@pytest.mark.parametrize("spelling", [OTHER, OTHER.upper()], ids=["as-written", "upper"])
def test_an_account_the_password_file_spells_capitalised_is_found(cased, spelling, tmp_path):
    target = f"other-{sum(c.isupper() for c in spelling)}.txt"
    r = put(cased, spelling, PASSWORD, target, tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (cased["share"] / target).stat().st_uid == pwd.getpwnam(OTHER).pw_uid


# -- lease breaks: one account, however spelled --------------------------------------------------
ALIAS = f"srnalias{SUFFIX}"


@pytest.fixture(scope="module")
def aliased(tmp_path_factory):
    """A server with a share `rw` and a username map making ALIAS another name of USER's
    account (as root, where USER acts as root: of root's, whose password file entry has
    USER's password)."""
    root = tmp_path_factory.mktemp("aliased")
    (root / "rw").mkdir()
    usermap = root / "users.map"
    env = dict(os.environ, SMBRING_PASSDB=str(root / "passdb"))
    if os.geteuid() == 0:
        usermap.write_text(f"root = {USER} {ALIAS}\n")
        add_user(env, "root")
        add_user(env, "daemon", WRONG)          # another account, a Unix one
    else:
        usermap.write_text(f"{USER} = {ALIAS}\n")
        add_user(env, "daemon", WRONG)
    port = free_port()
    (root / "smb.conf").write_text(f"[global]\nlisten = 127.0.0.1:{port}\nusername map = {usermap}\n"
                                   f"[rw]\npath = {root / 'rw'}\nread only = no\n")
    (root / "rw").chmod(0o777)
    proc, port, _log = spawn(root, "--config", str(root / "smb.conf"), port=port, accounts=True)
    yield port
    stop(proc)


def lease_open(tree, name: str, key: bytes):
    r = tree.request(wire.CREATE, create_body(name, READ_WRITE, wire.FILE_OPEN_IF, 0, oplock=LEASE,
                                              contexts=[(b"RqLs", struct.pack("<16sIIQ", key, R | W | H, 0, 0))]))
    assert r.status == wire.STATUS_SUCCESS, r
    return r


def break_goes_to_first(port: int, first_user: str, first_password: str, name: str) -> bool:
    """One client (one ClientGuid): a first connection logged on as `first_user`, then a
    second as USER, which takes a lease; another client's open breaks it. Whether the break
    went on the first connection (the client's oldest that may carry it), acknowledged there;
    else it must have come on the second."""
    guid = os.urandom(16)
    first, second = connect(port, guid=guid), connect(port, guid=guid)
    fs = first.logon(first_user, first_password)
    ftree = first.tree(fs, "rw")
    ss = second.logon(USER, PASSWORD)
    stree = second.tree(ss, "rw")
    key = os.urandom(16)
    lease_open(stree, name, key)
    other, mid = start_open(port, name)
    got = next_break(first, 3)
    conn, session, tree = first, fs, ftree
    if got is None:
        got, conn, session, tree = next_break(second, 5), second, ss, stree
    assert got is not None and got[8:24] == key
    state = struct.unpack_from("<I", got, 28)[0]
    ack = conn.request(wire.OPLOCK_BREAK, struct.pack("<HHI16sIQ", 36, 0, 0, key, state, 0),
                       session=session, tree_id=tree.id)
    assert ack.status == wire.STATUS_SUCCESS, ack
    answer = other.conns[0].response_to(mid)
    if answer.status == wire.STATUS_PENDING:
        answer = other.conns[0].response_to(mid)
    assert answer.status == wire.STATUS_SUCCESS
    for c in (first, second):
        c.close()
    other.close()
    return conn is first


def test_a_lease_break_may_go_to_a_session_of_the_same_account_under_an_alias(aliased):
    assert break_goes_to_first(aliased, ALIAS, PASSWORD, "alias.txt")


def test_a_lease_break_may_go_to_a_session_of_the_same_account_in_another_case(aliased):
    assert break_goes_to_first(aliased, f"ELSEWHERE\\{USER.upper()}", PASSWORD, "case.txt")


def test_a_lease_break_never_goes_to_another_accounts_session(aliased):
    assert not break_goes_to_first(aliased, "daemon", WRONG, "other.txt")
