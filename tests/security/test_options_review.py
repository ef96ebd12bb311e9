"""smb.conf's access options, each against a client trying to get around it.

- `valid users`/`invalid users` with a `username map` alias of the account named in the list,
  on a server started as root and on one that is not (every session acting as the server's
  user); with a Unix group the user joins while the server runs (membership is looked up at
  each tree connect, so the join must count at once).
- `hosts allow`/`hosts deny` for IPv4 clients of a dual-stack IPv6 socket (::ffff:a.b.c.d),
  from second loopback addresses (networks, masks, prefixes, wildcards, EXCEPT), and through
  a second channel bound from a refused address (multichannel).
- `veto files` reached by directory searches of every pattern, by renames and hard links to
  vetoed names, by opens and creates in every disposition, and by a link to a vetoed name.
- `ntlm auth = disabled` and `mschapv2-and-ntlmv2-only` against NTLMv2, NTLMv1 and unknown
  users (with `map to guest = bad user`).
- `server min protocol`/`server max protocol` through SMB1 openings and a stripped dialect
  list (FSCTL_VALIDATE_NEGOTIATE_INFO).
- `max connections` with many clients connecting at once, over one and two workers.
- `guest only`: a user acts there with the guest account's Unix rights, not its own.
"""
from __future__ import annotations

import os
import pwd
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from raw import LogonError, RawClient

from servers import PASSWORD, USER, as_root_args, free_port, spawn, stop, unix_accounts_with_group, wait_listening
from smbring.smb import wire

# Unix names unique to this process: the module's tests may run in two pytest-xdist workers
# at once (`--dist load`), each making and removing the accounts for itself
SUFFIX = f"{os.getpid() % 100000}"
ALIAS = "aliasname"          # a name the username map gives to the account ACCOUNT
ACCOUNT = f"optsa{SUFFIX}"   # a Unix account of the test (as root), or a password-file user
JOINER = f"optsj{SUFFIX}"    # a Unix account that joins GROUP while the server runs
GROUP = f"optsg{SUFFIX}"

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (Unix accounts, setuid)")


def logon(port: int, user: str, password: str = PASSWORD, source: str | None = None,
          host: str = "127.0.0.1"):
    c = RawClient(port, host=host, source=source)
    assert c.negotiate((wire.SMB311,)).status == wire.STATUS_SUCCESS
    return c, c.logon(user, password)


def tree_status(port: int, user: str, share: str, **where) -> int:
    """The tree connect's status, or the logon's where the logon fails."""
    try:
        c, s = logon(port, user, **where)
    except LogonError as e:
        return e.status
    try:
        return c.tree_connect(s, share).status
    finally:
        c.close()


def write_conf(directory: Path, port: int, global_options: str, shares: dict[str, str]) -> Path:
    text = f"[global]\nlisten = 127.0.0.1:{port}\nshutdown timeout = 1\n{global_options}\n"
    for name, options in shares.items():
        text += f"[{name}]\npath = {directory / 'share'}\nread only = no\n{options}\n"
    conf = directory / "smb.conf"
    conf.write_text(text)
    return conf


def add_user(directory: Path, name: str, password: str = PASSWORD) -> None:
    env = dict(os.environ, SMBRING_PASSDB=str(directory / "passdb"))
    subprocess.run([sys.executable, "-m", "smbring.cli", "user", "add", name, "--password-stdin"],
                   input=password + "\n", text=True, check=True, env=env, capture_output=True)


def serve_as_nobody(top: Path, conf: Path, port: int):
    """`smbring serve --config conf` as the user nobody (so not as root: every session acts as
    the server's own user). The interpreter may live where nobody cannot reach it: the
    process keeps only the capability to read and search directories, which changes nothing
    the server decides about users."""
    env = dict(os.environ, SMBRING_PASSDB=str(top / "passdb"))
    with open(top / "server.log", "w") as log:
        proc = subprocess.Popen(
            ["setpriv", "--reuid", "nobody", "--regid", str(pwd.getpwnam("nobody").pw_gid), "--clear-groups",
             "--inh-caps", "+dac_read_search", "--ambient-caps", "+dac_read_search",
             sys.executable, "-m", "smbring.cli", "serve", "--config", str(conf), "--log-level", "info"],
            env=env, stdout=log, stderr=subprocess.STDOUT)
    wait_listening(proc, port, top / "server.log")
    return proc


# -- user lists and the username map ------------------------------------------------------------
@pytest.fixture(scope="module")
def accounts():
    if os.geteuid() != 0:
        pytest.skip("needs root (Unix accounts)")
    yield from unix_accounts_with_group((ACCOUNT, JOINER), GROUP, ACCOUNT)


@pytest.fixture
def unprivileged_dir():
    """A directory the unprivileged server (run as `nobody`) may use: its share, its password
    file, its control socket."""
    top = Path(tempfile.mkdtemp(prefix="smbring-opts-", dir="/tmp"))
    top.chmod(0o755)
    (top / "share").mkdir()
    nobody = pwd.getpwnam("nobody")
    os.chown(top / "share", nobody.pw_uid, nobody.pw_gid)
    yield top
    subprocess.run(["rm", "-rf", str(top)], check=False)


LISTS = {"inv": f"invalid users = {ACCOUNT}", "val": f"valid users = {ACCOUNT}",
         "invgrp": f"invalid users = @{GROUP}"}


def check_lists_follow_the_account(port: int) -> None:
    # the alias is the account: the lists naming the account decide for it too
    assert tree_status(port, ALIAS, "inv") == wire.STATUS_ACCESS_DENIED
    assert tree_status(port, ALIAS, "invgrp") == wire.STATUS_ACCESS_DENIED
    assert tree_status(port, ALIAS, "val") == wire.STATUS_SUCCESS
    # and the account's own name, in another case or with a domain, gets no further (as root
    # a name in another case is no Unix account: the logon itself fails)
    for spelled in (ACCOUNT, ACCOUNT.upper(), f"SOMEDOM\\{ACCOUNT}"):
        assert tree_status(port, spelled, "inv") in (wire.STATUS_ACCESS_DENIED, wire.STATUS_LOGON_FAILURE), spelled


@needs_root
def test_a_username_map_alias_is_checked_as_its_account_as_root(accounts, tmp_path):
    usermap = tmp_path / "users.map"
    usermap.write_text(f"{ACCOUNT} = {ALIAS}\n")
    (tmp_path / "share").mkdir()
    (tmp_path / "share").chmod(0o777)
    port = free_port()
    conf = write_conf(tmp_path, port, f"username map = {usermap}", LISTS)
    add_user(tmp_path, ACCOUNT)
    proc, port, _ = spawn(tmp_path, "--config", str(conf), port=port, accounts=True)
    try:
        check_lists_follow_the_account(port)
    finally:
        stop(proc)


@needs_root
@pytest.mark.skipif(not shutil.which("setpriv"), reason="needs util-linux's setpriv")
def test_a_username_map_alias_is_checked_as_its_account_without_root(accounts, unprivileged_dir):
    """Started as an ordinary user, the server acts as itself for every session, but the
    username map still turns the alias into the account whose password logs it on: the user
    lists must name that account, or `invalid users = account` is got around by logging on
    under the alias."""
    top = unprivileged_dir
    usermap = top / "users.map"
    usermap.write_text(f"{ACCOUNT} = {ALIAS}\n")
    port = free_port()
    conf = write_conf(top, port, f"username map = {usermap}\ncontrol socket = {top}/ctl", LISTS)
    add_user(top, ACCOUNT)
    add_user(top, USER)
    nobody = pwd.getpwnam("nobody")
    for path in (top, top / "passdb", usermap, conf):
        os.chown(path, nobody.pw_uid, nobody.pw_gid)
    proc = serve_as_nobody(top, conf, port)
    try:
        check_lists_follow_the_account(port)
    finally:
        stop(proc)


@needs_root
def test_joining_an_invalid_group_counts_at_the_next_tree_connect(accounts, tmp_path):
    (tmp_path / "share").mkdir()
    (tmp_path / "share").chmod(0o777)
    port = free_port()
    conf = write_conf(tmp_path, port, "", {"inv": f"invalid users = @{GROUP}",
                                            "plus": f"invalid users = +{GROUP}",
                                            "val": f"valid users = @{GROUP}"})
    add_user(tmp_path, JOINER)
    proc, port, _ = spawn(tmp_path, "--config", str(conf), port=port, accounts=True)
    try:
        assert tree_status(port, JOINER, "inv") == wire.STATUS_SUCCESS
        assert tree_status(port, JOINER, "val") == wire.STATUS_ACCESS_DENIED
        subprocess.run(["usermod", "-aG", GROUP, JOINER], check=True, capture_output=True)
        try:
            # the next tree connect sees the new membership: no restart, no new logon needed
            for share, expected in (("inv", wire.STATUS_ACCESS_DENIED), ("plus", wire.STATUS_ACCESS_DENIED),
                                    ("val", wire.STATUS_SUCCESS)):
                assert tree_status(port, JOINER, share) == expected, share
        finally:
            subprocess.run(["gpasswd", "-d", JOINER, GROUP], check=False, capture_output=True)
    finally:
        stop(proc)


# -- hosts allow / hosts deny from an IPv6 socket -----------------------------------------------
@pytest.fixture
def mapped_server(tmp_path):
    """A server on an IPv6 socket that also takes IPv4 (as systemd's `ListenStream=445` hands
    one over), bound to 127.0.0.1's IPv4-mapped address: its IPv4 clients arrive as
    ::ffff:127.0.0.x, the form a dual-stack server sees them in, and it listens on loopback
    only. The socket is passed as systemd passes it (LISTEN_FDS)."""
    (tmp_path / "share").mkdir()
    shares = {"deny3": "hosts deny = 127.0.0.3",
              "net": "hosts deny = 127.0.0.0/255.255.255.252",        # .0 to .3
              "prefix": "hosts deny = 127.0.0.",
              # (with [global]'s deny list the default of every share, a share's allow list
              # alone would admit a host on neither list, as in Samba: hence ALL)
              "except": "hosts allow = 127.0.0.0/8 EXCEPT 127.0.0.3\nhosts deny = ALL",
              "wild": "hosts allow = 127.0.0.?\nhosts deny = ALL",
              "deny1": "hosts deny = 127.0.0.1",
              "open": ""}
    listener = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    listener.bind(("::ffff:127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    conf = write_conf(tmp_path, port, "hosts deny = 127.0.0.2\ncontrol socket = none", shares)
    add_user(tmp_path, USER)
    env = dict(os.environ, SMBRING_PASSDB=str(tmp_path / "passdb"))
    fd = listener.fileno()
    script = (f'exec 3<&{fd} {fd}<&-; export LISTEN_PID=$$ LISTEN_FDS=1; '
              f'exec "$0" -m smbring.cli serve --config "$1" --log-level info '
              + " ".join(as_root_args(tmp_path)))
    log = tmp_path / "server.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(["bash", "-c", script, sys.executable, str(conf)], pass_fds=(fd,), env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    listener.close()
    try:
        wait_for(proc, log, "smbring serving")
        yield port, log
    finally:
        stop(proc)


def wait_for(proc, log: Path, word: str) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if word in log.read_text().lower():
            return
        if proc.poll() is not None:
            raise RuntimeError(log.read_text())
        time.sleep(0.05)
    raise RuntimeError("server did not start: " + log.read_text())


def test_hosts_lists_hold_for_ipv4_clients_of_an_ipv6_socket(mapped_server):
    port, log = mapped_server
    from raw import Disconnected
    with pytest.raises((ConnectionError, OSError, Disconnected)):      # [global] hosts deny
        c = RawClient(port, source="127.0.0.2")
        c.negotiate((wire.SMB311,))
    assert "127.0.0.2" in log.read_text()
    expected = {  # share: (from 127.0.0.1, from 127.0.0.3, from 127.0.0.9)
        "deny3": (True, False, True), "net": (False, False, True), "prefix": (False, False, False),
        "except": (True, False, True), "wild": (True, True, True), "deny1": (False, True, True),
        "open": (True, True, True)}
    for i, source in enumerate(("127.0.0.1", "127.0.0.3", "127.0.0.9")):
        for share, outcomes in expected.items():
            status = tree_status(port, USER, share, source=source)
            want = wire.STATUS_SUCCESS if outcomes[i] else wire.STATUS_ACCESS_DENIED
            assert status == want, (share, source, hex(status))


# -- veto files ---------------------------------------------------------------------------------
VETO = "/*.secret/Private/a?c/"
# on disk, vetoed: one name each pattern catches, two with a newline where a wildcard stands
# (a name a client cannot type, but the server lists what it finds: it must veto them alike)
VETOED = ("x.secret", "Private", "evil\n.secret", "a\nc")


@pytest.fixture(scope="module")
def veto_share(tmp_path_factory):
    """A server whose [share] vetoes VETOED (every test checks that nothing changed, so the
    tests share it): (its directory, its port)."""
    tmp_path = tmp_path_factory.mktemp("veto")
    root = tmp_path / "share"
    root.mkdir()
    for name in VETOED:
        if name == "Private":
            (root / name).mkdir()
            (root / name / "inner.txt").write_text("inner")
        else:
            (root / name).write_text("vetoed")
    (root / "plain.txt").write_text("plain")
    (root / "dir").mkdir()
    port = free_port()
    conf = write_conf(tmp_path, port, "", {"share": f"veto files = {VETO}"})
    proc, port, _ = spawn(tmp_path, "--config", str(conf), port=port)
    yield root, port
    stop(proc)


@pytest.fixture
def veto_server(veto_share):
    root, port = veto_share
    c, s = logon(port, USER)
    try:
        yield root, c.tree(s, "share")
    finally:
        c.close()


def names_in(tree, directory: str, pattern: str) -> set[str]:
    """Every name a directory search with `pattern` returns (FileDirectoryInformation)."""
    fid = tree.open(directory, wire.GENERIC_READ, options=wire.FILE_DIRECTORY_FILE)
    found, flags = set(), 0x1
    try:
        while True:
            r = tree.query_directory(fid, pattern, klass=1, flags=flags)
            if r.status != wire.STATUS_SUCCESS:
                assert r.status in (wire.STATUS_NO_MORE_FILES, wire.STATUS_NO_SUCH_FILE,
                                    wire.STATUS_OBJECT_NAME_INVALID), hex(r.status)
                return found
            data, at, flags = r.buffer(2), 0, 0
            while True:
                following, = struct.unpack_from("<I", data, at)
                length, = struct.unpack_from("<I", data, at + 60)
                found.add(data[at + 64:at + 64 + length].decode("utf-16-le"))
                if not following:
                    break
                at += following
    finally:
        tree.close(fid)


@pytest.mark.parametrize("pattern", ["*", "x.secret", "X.SECRET", "x.secre?", "x<", "*.secret",
                                     "*.SECRET", "Private", "p*", "a?c", "evil*", "*\n*"])
def test_a_directory_search_never_names_a_vetoed_file(veto_server, pattern):
    _root, tree = veto_server
    found = names_in(tree, "", pattern)
    assert not found & set(VETOED), (pattern, found)
    if pattern == "*":
        assert "plain.txt" in found


def link_info(name: str, replace: bool = False) -> bytes:
    """FileLinkInformation / FileRenameInformation (the same layout, MS-FSCC 2.4.27.2)."""
    encoded = name.encode("utf-16-le")
    return struct.pack("<B7xQI", replace, 0, len(encoded)) + encoded


@pytest.mark.parametrize("klass", [10, 11], ids=["rename", "hard link"])
@pytest.mark.parametrize("target", ["new.secret", "NEW.SeCrEt", "Private", "PRIVATE\\in.txt",
                                    "dir\\..\\x.secret", "abc", "ABC"])
def test_no_file_gets_a_vetoed_name_by_rename_or_hard_link(veto_server, klass, target):
    root, tree = veto_server
    before = sorted(p.name for p in root.rglob("*"))
    fid = tree.open("plain.txt", wire.GENERIC_READ | wire.DELETE)
    try:
        r = tree.set_info(fid, wire.INFO_FILE, klass, link_info(target, replace=True))
        assert r.status != wire.STATUS_SUCCESS, (target, r)
    finally:
        tree.close(fid)
    assert sorted(p.name for p in root.rglob("*")) == before
    assert (root / "x.secret").read_text() == "vetoed"      # not replaced either


@pytest.mark.parametrize("name", ["x.secret", "X.SECRET", "x.secret:s", "x.secret::$DATA",
                                  "Private", "Private\\inner.txt", "dir\\..\\Private\\inner.txt",
                                  "ABC"])
@pytest.mark.parametrize("disposition", [wire.FILE_OPEN, wire.FILE_OPEN_IF, wire.FILE_OVERWRITE_IF,
                                         wire.FILE_SUPERSEDE])
def test_a_vetoed_name_is_neither_opened_nor_made(veto_server, name, disposition):
    root, tree = veto_server
    before = sorted(p.name for p in root.rglob("*"))
    r = tree.create(name, wire.GENERIC_READ | wire.GENERIC_WRITE | wire.DELETE, disposition,
                    options=0x1000)                          # and DELETE_ON_CLOSE, were it opened
    assert r.status in (wire.STATUS_OBJECT_NAME_NOT_FOUND, wire.STATUS_OBJECT_PATH_NOT_FOUND), (name, r)
    assert sorted(p.name for p in root.rglob("*")) == before
    assert (root / "x.secret").read_text() == "vetoed"


# -- ntlm auth ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ntlm_disabled(servers):
    """`ntlm auth = disabled` (anonymous logons only), with a guest share and `map to guest =
    bad user`, which must not turn a refused NTLM logon into a guest's."""
    return servers({"ntlm auth": "disabled", "map to guest": "bad user"}, guest=True)


def test_ntlm_auth_disabled_refuses_every_ntlm_logon(ntlm_disabled):
    from logon import V1_FLAGS, forged_logon, ntlmv1_responses
    server = ntlm_disabled
    for user, password in ((USER, PASSWORD), ("stranger", "anything")):   # NTLMv2; an unknown user
        c = server.client()
        assert c.negotiate((wire.SMB311,)).status == wire.STATUS_SUCCESS
        with pytest.raises(LogonError) as refused:
            c.logon(user, password)
        assert refused.value.status == wire.STATUS_LOGON_FAILURE, user
    for extended in (False, True):                                        # NTLMv1, either kind
        c = server.client()
        assert c.negotiate((wire.SMB210,)).status == wire.STATUS_SUCCESS
        s = forged_logon(c, USER, lambda challenge: ntlmv1_responses(server.nt_hash(), challenge, extended),
                         flags=V1_FLAGS | (0x80000 if extended else 0))
        assert s.status == wire.STATUS_LOGON_FAILURE, s.last
    if shutil.which("smbclient"):
        r = subprocess.run(["smbclient", "//127.0.0.1/rw", "-p", str(server.port), "-U", f"{USER}%{PASSWORD}",
                            "-c", "ls"], capture_output=True, text=True, timeout=60)
        assert "NT_STATUS_LOGON_FAILURE" in r.stdout + r.stderr, r.stdout + r.stderr
    # an anonymous logon is still a null session, that reaches the guest share and no other
    c = server.client()
    assert c.negotiate((wire.SMB311,)).status == wire.STATUS_SUCCESS
    s = forged_logon(c, "", lambda _challenge: (b"", b""), flags=V1_FLAGS | 0x800)
    assert s.status == wire.STATUS_SUCCESS
    assert c.tree_connect(s, "public").status == wire.STATUS_SUCCESS
    assert c.tree_connect(s, "rw").status == wire.STATUS_ACCESS_DENIED


@pytest.mark.parametrize("extended", [False, True], ids=["ntlmv1", "ntlmv1-ess"])
def test_mschapv2_and_ntlmv2_only_refuses_ntlmv1_over_smb(servers, extended):
    from logon import V1_FLAGS, forged_logon, ntlmv1_responses
    server = servers({"ntlm auth": "mschapv2-and-ntlmv2-only"})
    c = server.client()
    assert c.negotiate((wire.SMB210,)).status == wire.STATUS_SUCCESS
    s = forged_logon(c, USER, lambda challenge: ntlmv1_responses(server.nt_hash(), challenge, extended),
                     flags=V1_FLAGS | (0x80000 if extended else 0))
    assert s.status == wire.STATUS_LOGON_FAILURE, s.last


# -- server min protocol / server max protocol --------------------------------------------------
@pytest.fixture(scope="module")
def smb3_only(servers):
    return servers({"server min protocol": "SMB3_00", "server max protocol": "SMB3_02"})


def test_an_smb1_opening_with_the_wildcard_still_meets_the_minimum(smb3_only):
    from raw import Disconnected
    # SMB 2.??? is answered with the wildcard dialect; the SMB2 NEGOTIATE that follows
    # offering only dialects below the minimum is refused, and one above the maximum is
    # not granted
    for offered, expected in (((wire.SMB202, wire.SMB210), None), ((wire.SMB311,), None),
                              ((wire.SMB202, wire.SMB210, wire.SMB300, wire.SMB311), wire.SMB300)):
        c = smb3_only.client()
        c.smb1_negotiate()
        r = c.parse(c.recv_frame())[0]
        assert r.status == wire.STATUS_SUCCESS
        assert struct.unpack_from("<H", r.raw, 64 + 4)[0] == 0x02FF
        c.next_message_id = 1
        r = c.negotiate(offered)
        if expected is None:
            assert r.status == wire.STATUS_NOT_SUPPORTED, (offered, r)
        else:
            assert r.status == wire.STATUS_SUCCESS and c.dialect == expected
    # an SMB1 opening without the wildcard, offering 2.0.2 only, gets nothing at all
    from smbcore import smb1_negotiate_message
    c = smb3_only.client()
    smb1 = smb1_negotiate_message((b"NT LM 0.12", b"SMB 2.002"))
    c.send_frame(len(smb1).to_bytes(4, "big") + smb1)
    with pytest.raises((Disconnected, OSError)):
        c.recv_frame()
    # nor does an SMB1 opening without any SMB2 dialect
    c = smb3_only.client()
    smb1 = smb1_negotiate_message((b"NT LM 0.12",))
    c.send_frame(len(smb1).to_bytes(4, "big") + smb1)
    with pytest.raises((Disconnected, OSError)):
        c.recv_frame()


def test_a_downgraded_negotiate_is_caught_by_validate_negotiate_info(smb3_only):
    """A man in the middle that strips SMB 3.0.2 from the client's list gets SMB 3.0 at most;
    the client's signed FSCTL_VALIDATE_NEGOTIATE_INFO then names what it really offered and
    the server ends the connection (MS-SMB2 3.3.5.15.12)."""
    from raw import Disconnected, answer_or_drop
    c = smb3_only.client()
    assert c.negotiate((wire.SMB300,)).status == wire.STATUS_SUCCESS and c.dialect == wire.SMB300
    s = c.logon(USER, PASSWORD)
    tree = c.tree(s, "rw")
    sent = c.offered
    validate = (struct.pack("<I16sHH", sent["capabilities"], sent["guid"], sent["security_mode"], 2)
                + struct.pack("<HH", wire.SMB300, wire.SMB302))
    r = answer_or_drop(lambda: tree.ioctl(b"\xff" * 16, 0x00140204, validate, max_output=24))
    assert r is None or r.status != wire.STATUS_SUCCESS, r
    if r is not None:
        with pytest.raises((Disconnected, OSError)):
            c.echo()


# -- max connections ----------------------------------------------------------------------------
@pytest.mark.parametrize("workers", [1, 2])
def test_max_connections_holds_against_clients_connecting_at_once(tmp_path, workers):
    """Twelve clients, logged on, send their TREE_CONNECTs to a share of `max connections = 3`
    at the same moment (over two worker processes too): three get in, the others are told
    STATUS_INSUFFICIENT_RESOURCES; a session asking again for the share it holds counts again."""
    (tmp_path / "share").mkdir()
    (tmp_path / "run").mkdir()
    port = free_port()
    conf = write_conf(tmp_path, port, f"smbring workers = {workers}\ncontrol socket = {tmp_path / 'run' / 'ctl'}",
                      {"capped": "max connections = 3"})
    proc, port, _ = spawn(tmp_path, "--config", str(conf), port=port)
    clients = []
    try:
        sessions = []
        for _ in range(12):
            c, s = logon(port, USER)
            clients.append(c)
            sessions.append((c, s))
        start = threading.Barrier(len(sessions))
        statuses = [None] * len(sessions)

        def connect(i):
            c, s = sessions[i]
            start.wait()
            statuses[i] = c.tree_connect(s, "capped").status

        threads = [threading.Thread(target=connect, args=(i,)) for i in range(len(sessions))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert statuses.count(wire.STATUS_SUCCESS) == 3, [hex(x or 0) for x in statuses]
        assert statuses.count(wire.STATUS_INSUFFICIENT_RESOURCES) == 9, [hex(x or 0) for x in statuses]
        # one of the three asks again: no fourth place for it either
        holder = statuses.index(wire.STATUS_SUCCESS)
        c, s = sessions[holder]
        assert c.tree_connect(s, "capped").status == wire.STATUS_INSUFFICIENT_RESOURCES
    finally:
        for c in clients:
            c.close()
        stop(proc)


# -- guest only ---------------------------------------------------------------------------------
@needs_root
def test_guest_only_gives_a_user_the_guests_rights_not_its_own(accounts, tmp_path):
    """A user with a password connects to a `guest only` share: it acts there as the guest
    account, so the files only it may read stay closed to it, and what it makes belongs to
    the guest account."""
    top = Path(tempfile.mkdtemp(prefix="smbring-guestonly-", dir="/tmp"))
    try:
        top.chmod(0o755)
        share = top / "share"
        share.mkdir()
        share.chmod(0o1777)
        uid, gid = accounts[ACCOUNT]
        own = share / "own600.txt"
        own.write_text("the account's own")
        os.chown(own, uid, gid)
        own.chmod(0o600)
        mine = share / "mine"                   # a directory only the account may enter
        mine.mkdir()
        (mine / "inner.txt").write_text("inner")
        for path in (mine, mine / "inner.txt"):
            os.chown(path, uid, gid)
        mine.chmod(0o700)
        port = free_port()
        conf = tmp_path / "smb.conf"
        conf.write_text(f"[global]\nlisten = 127.0.0.1:{port}\nshutdown timeout = 1\n"
                        f"[g]\npath = {share}\nread only = no\nguest ok = yes\nguest only = yes\n"
                        f"[u]\npath = {share}\nread only = no\n")
        add_user(tmp_path, ACCOUNT)
        proc, port, _ = spawn(tmp_path, "--config", str(conf), port=port, accounts=True)
        try:
            c, s = logon(port, ACCOUNT)
            own_tree, guest_tree = c.tree(s, "u"), c.tree(s, "g")
            # as itself (share u) the account reads its files; as the guest (share g) it may not
            for name in ("own600.txt", "mine\\inner.txt"):
                r = own_tree.create(name)
                assert r.status == wire.STATUS_SUCCESS, (name, r)
                own_tree.close(r.file_id)
                r = guest_tree.create(name)
                assert r.status == wire.STATUS_ACCESS_DENIED, (name, r)
            r = guest_tree.create("made.txt", wire.GENERIC_WRITE, wire.FILE_CREATE)
            assert r.status == wire.STATUS_SUCCESS, r
            guest_tree.close(r.file_id)
            nobody = pwd.getpwnam("nobody")
            assert (share / "made.txt").stat().st_uid == nobody.pw_uid
            c.close()
        finally:
            stop(proc)
    finally:
        subprocess.run(["rm", "-rf", str(top)], check=False)


# -- a share's hosts lists and a second channel -------------------------------------------------
def bind_channel(c2: RawClient, s1, user: str = USER, password: str = PASSWORD):
    """logon.bind_channel, as USER."""
    from logon import bind_channel as bind
    return bind(c2, s1, user, password)


def test_a_channel_from_a_denied_address_does_not_reach_the_share(tmp_path):
    """A client the share's `hosts deny` names cannot connect to it; a channel bound from
    there to a session that connected from an admitted address must not carry it in either,
    whichever comes first: the binding (STATUS_ACCESS_DENIED) where the session holds a tree
    connect to the share, the tree connect (STATUS_ACCESS_DENIED) where a channel of the
    session comes from a refused address."""
    from smbcore import read_body
    (tmp_path / "share").mkdir()
    (tmp_path / "share" / "data.txt").write_text("for admitted hosts only")
    port = free_port()
    conf = write_conf(tmp_path, port, "", {"d": "hosts deny = 127.0.0.3", "open": ""})
    proc, port, _ = spawn(tmp_path, "--config", str(conf), port=port)

    def connected(source: str, guid: bytes) -> RawClient:
        c = RawClient(port, source=source)
        assert c.negotiate((wire.SMB311,), client_guid=guid).status == wire.STATUS_SUCCESS
        return c

    try:
        # the tree connect first, from 127.0.0.1; then a channel from 127.0.0.3
        guid = os.urandom(16)
        c1 = connected("127.0.0.1", guid)
        s1 = c1.logon(USER, PASSWORD)
        tree = c1.tree(s1, "d")
        fid = tree.open("data.txt")
        c2 = connected("127.0.0.3", guid)
        _channel, r = bind_channel(c2, s1)
        assert r.status == wire.STATUS_ACCESS_DENIED, r
        assert tree.read(fid, 100).status == wire.STATUS_SUCCESS        # the admitted channel goes on
        # the channel first, while the session holds only a share that admits both addresses
        guid = os.urandom(16)
        c3 = connected("127.0.0.1", guid)
        s3 = c3.logon(USER, PASSWORD)
        open_tree = c3.tree(s3, "open")
        c4 = connected("127.0.0.3", guid)
        channel, r = bind_channel(c4, s3)
        assert r.status == wire.STATUS_SUCCESS, r
        assert c3.tree_connect(s3, "d").status == wire.STATUS_ACCESS_DENIED
        assert c4.tree_connect(channel, "d").status == wire.STATUS_ACCESS_DENIED
        fid = open_tree.open("data.txt")                              # the other share: both reach it
        r = c4.request(wire.READ, read_body(fid, 100), session=channel, tree_id=open_tree.id)
        assert r.status == wire.STATUS_SUCCESS, r
    finally:
        stop(proc)


def test_a_symlink_to_a_vetoed_name_does_not_reach_it(tmp_path):
    """`veto files` says a name is never reached: a link in the share whose target is a
    vetoed name (made by a local user; SMB clients cannot make links) must not open it."""
    root = tmp_path / "share"
    root.mkdir()
    (root / "x.secret").write_text("vetoed")
    (root / "Private").mkdir()
    (root / "Private" / "inner.txt").write_text("inner")
    os.symlink("x.secret", root / "link.txt")
    os.symlink("Private", root / "linkdir")
    os.symlink(str(root / "x.secret"), root / "abslink.txt")
    port = free_port()
    conf = write_conf(tmp_path, port, "", {"share": "veto files = /*.secret/Private/"})
    proc, port, _ = spawn(tmp_path, "--config", str(conf), port=port)
    try:
        c, s = logon(port, USER)
        tree = c.tree(s, "share")
        for name in ("link.txt", "linkdir\\inner.txt", "abslink.txt", "linkdir"):
            r = tree.create(name)
            assert r.status != wire.STATUS_SUCCESS, (name, r)
    finally:
        stop(proc)


# -- shares that are not served -----------------------------------------------------------------
def test_a_share_that_is_not_served_is_reached_by_no_spelling(tmp_path):
    """`available = no`, a printer share, a share without a path: no tree connect reaches
    them, however the name is spelled (case, the server's name or address in the UNC, a
    trailing dot or space), nor are they listed."""
    (tmp_path / "share").mkdir()
    port = free_port()
    conf = write_conf(tmp_path, port, "", {"off": "available = no", "print": "printable = yes",
                                            "open": ""})
    conf.write_text(conf.read_text() + "[nopath]\ncomment = no path\n")
    proc, port, _ = spawn(tmp_path, "--config", str(conf), port=port)
    try:
        from smbcore import tree_connect_body
        c, s = logon(port, USER)
        for name in ("off", "OFF", "Off", "off.", "off ", "print", "PRINT", "nopath"):
            for host in ("127.0.0.1", "SMBRING", "localhost"):
                r = c.request(wire.TREE_CONNECT, tree_connect_body(f"\\\\{host}\\{name}"), session=s)
                assert r.status == wire.STATUS_BAD_NETWORK_NAME, (host, name, r)
        assert c.tree_connect(s, "open").status == wire.STATUS_SUCCESS
        if shutil.which("smbclient"):
            r = subprocess.run(["smbclient", "-L", "127.0.0.1", "-p", str(port), "-U", f"{USER}%{PASSWORD}"],
                               capture_output=True, text=True, timeout=60)
            assert "open" in r.stdout, r.stdout + r.stderr
            for name in ("off", "print", "nopath"):
                assert f"\t{name} " not in r.stdout and f" {name} " not in r.stdout, r.stdout
    finally:
        stop(proc)
