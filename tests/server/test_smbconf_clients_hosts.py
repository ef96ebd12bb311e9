"""`hosts allow` and `hosts deny`, in [global] and in a share, with smbclient and rpcclient run
from network namespaces: each namespace reaches the server over a veth pair of its own, from
an address of its own, as a client on another machine would. The server binds only the host
ends of those pairs (bind interfaces only); the namespaces, their pairs and the accounts are
removed after, whatever happened.

[global]: a client not allowed is dropped when its connection is accepted, before a byte of
SMB (smbclient gets no NEGOTIATE answer); a share's list refuses its tree connect with
NT_STATUS_ACCESS_DENIED and leaves the client's other shares alone."""
from __future__ import annotations

import ipaddress
import os

import pytest
from smbconf_fixtures import (
    TAG,
    client_namespaces,
    need_root_and_samba,
    output,
    refused,
    run,
    serve,
    unix_accounts,
)

need_root_and_samba()

PASSWORD = "Hosts-pw1"
USER = f"sclh{TAG}"


@pytest.fixture(scope="module")
def account():
    with unix_accounts({USER: ()}) as made:
        yield made[USER]


@pytest.fixture(scope="module")
def namespaces():
    """Three client namespaces; each may also reach the others' server addresses (a default
    route through its own pair), to try another of the server's addresses."""
    with client_namespaces(3) as made:
        for ns in made:
            run("ip", "netns", "exec", ns.name, "ip", "route", "add", "default", "via", ns.server_address)
        yield made


def network_of(ns) -> str:
    return str(ipaddress.IPv4Interface(f"{ns.client_address}/30").network)


def start(tmp_path_factory, account, namespaces, global_options: str, shares: dict[str, str]):
    tmp = tmp_path_factory.mktemp("clients-hosts")
    root = tmp / "share"
    root.mkdir()
    (root / "file.txt").write_text("contents")
    os.chown(root, account.uid, account.gid)
    full = {name: f"path = {root}\n{options}" for name, options in shares.items()}
    return serve(tmp / "run", global_options, full, {USER: PASSWORD},
                 bind=tuple(ns.server_address for ns in namespaces))


@pytest.fixture(scope="module")
def allowing(tmp_path_factory, account, namespaces):
    """[global] hosts allow = namespace 0's network (as address/mask), hosts deny = ALL."""
    ns0 = namespaces[0]
    mask = "255.255.255.252"
    options = f"hosts allow = {network_of(ns0).split('/')[0]}/{mask}\nhosts deny = ALL"
    with start(tmp_path_factory, account, namespaces, options, {"open": ""}) as served:
        yield served


@pytest.fixture(scope="module")
def denying(tmp_path_factory, account, namespaces):
    """[global] hosts deny = namespace 2, which every share inherits unless it sets its own.
    [only0] allows namespace 0 alone (its hosts deny emptied), [only0all] too (hosts deny =
    ALL), [not0] denies namespace 0; [inherits] allows namespace 0 and keeps the inherited
    deny list: as in Samba, a client in neither list is then allowed. [open]: no list."""
    ns0, ns2 = namespaces[0], namespaces[2]
    shares = {"only0": f"hosts allow = {ns0.client_address}\nhosts deny =",
              "only0all": f"hosts allow = {ns0.client_address}\nhosts deny = ALL",
              "not0": f"hosts deny = {ns0.client_address}",
              "inherits": f"hosts allow = {ns0.client_address}", "open": ""}
    with start(tmp_path_factory, account, namespaces, f"hosts deny = {ns2.client_address}",
               shares) as served:
        yield served


def ls(server, ns, share: str, host: str | None = None):
    return server.smbclient(share, "ls", user=USER, netns=ns.name, host=host or ns.server_address)


def served_ok(r) -> bool:
    return r.returncode == 0 and "file.txt" in r.stdout


def dropped(r) -> bool:
    """Refused before any SMB answer: no NEGOTIATE response, no share."""
    text = output(r)
    return r.returncode != 0 and "file.txt" not in r.stdout and "NT_STATUS_ACCESS_DENIED" not in text


# -- [global] ---------------------------------------------------------------------------------
def test_global_hosts_allow_drops_everyone_else_at_accept(allowing, namespaces):
    ns0, ns1, ns2 = namespaces
    assert served_ok(ls(allowing, ns0, "open"))
    for ns in (ns1, ns2):
        # at its own server address, and at the allowed namespace's
        for host in (ns.server_address, ns0.server_address):
            r = ls(allowing, ns, "open", host=host)
            assert dropped(r), (ns.name, host, output(r))
        r = run("ip", "netns", "exec", ns.name, "rpcclient", "-p", str(allowing.port), "-U",
                f"{USER}%{PASSWORD}", "-c", "srvinfo", ns.server_address, check=False, timeout=60)
        assert r.returncode != 0 and "platform_id" not in r.stdout, output(r)
    log = allowing.log_text()
    for ns in (ns1, ns2):
        assert f"{ns.client_address}" in log
    assert "not allowed (hosts allow / hosts deny)" in log


def test_global_hosts_deny_drops_that_client_only(denying, namespaces):
    ns0, ns1, ns2 = namespaces
    assert served_ok(ls(denying, ns0, "open")) and served_ok(ls(denying, ns1, "open"))
    for host in (ns2.server_address, ns0.server_address, ns1.server_address):
        r = ls(denying, ns2, "open", host=host)
        assert dropped(r), (host, output(r))
    r = run("ip", "netns", "exec", ns2.name, "smbclient", "-L", f"//{ns2.server_address}", "-p",
            str(denying.port), "-U", f"{USER}%{PASSWORD}", check=False, timeout=60)
    assert r.returncode != 0 and "open" not in r.stdout, output(r)


# -- a share's lists --------------------------------------------------------------------------
def test_a_shares_hosts_lists_refuse_its_tree_connect_only(denying, namespaces):
    ns0, ns1, _ = namespaces
    expected = {(ns0.name, "only0"): True, (ns0.name, "only0all"): True, (ns0.name, "not0"): False,
                (ns0.name, "inherits"): True,
                (ns1.name, "only0"): False, (ns1.name, "only0all"): False, (ns1.name, "not0"): True,
                (ns1.name, "inherits"): True}
    for ns in (ns0, ns1):
        for share in ("only0", "ONLY0", "only0all", "not0", "Not0", "inherits"):
            r = ls(denying, ns, share)
            if expected[ns.name, share.lower()]:
                assert served_ok(r), (ns.name, share, output(r))
            else:
                assert refused(r) and "file.txt" not in r.stdout, (ns.name, share, output(r))
        # at the other namespace's server address: the client's own address decides
        other = ns1 if ns is ns0 else ns0
        for share in ("only0", "only0all", "not0"):
            r = ls(denying, ns, share, host=other.server_address)
            assert served_ok(r) == expected[ns.name, share], (ns.name, share, output(r))
        assert served_ok(ls(denying, ns, "open"))
    assert "hosts allow/deny" in denying.log_text()
