"""`max connections` (a share's tree connects at once, all clients together) and `deadtime`
(an idle connection with nothing open is dropped) with smbclient sessions held open by real
Unix accounts.

A held smbclient reads its commands from a pipe: it stays connected (session and tree) until
the test closes it or the server drops it, which the next command that needs the server
shows."""
from __future__ import annotations

import os
import time

import pytest
from smbconf_fixtures import TAG, need_root_and_samba, output, refused, serve, unix_accounts

need_root_and_samba()

PASSWORD = "Limits-pw1"
ALICE = f"scla{TAG}"
BOB = f"sclb{TAG}"
DEADTIME_MINUTES = 0.05         # 3 seconds


@pytest.fixture(scope="module")
def accounts():
    with unix_accounts({ALICE: (), BOB: ()}) as made:
        yield made


@pytest.fixture
def start(accounts, tmp_path):
    """start(global options, {share: options}) -> a server whose shares are each a directory
    ALICE owns (mode 0777, so BOB may write too); every server stopped after."""
    contexts = []

    def start(global_options: str, shares: dict[str, str]):
        full = {}
        for name, options in shares.items():
            root = tmp_path / name
            root.mkdir()
            os.chown(root, accounts[ALICE].uid, accounts[ALICE].gid)
            root.chmod(0o777)
            (root / "file.txt").write_text("contents")
            full[name] = f"path = {root}\nread only = no\n{options}"
        context = serve(tmp_path / f"run{len(contexts)}", global_options, full,
                        {ALICE: PASSWORD, BOB: PASSWORD})
        contexts.append(context)
        return context.__enter__()

    yield start
    for context in contexts:
        context.__exit__(None, None, None)


def answers(held) -> bool:
    """Whether the held smbclient's tree still answers `ls` (which needs the server)."""
    text = held.ask("ls", (b"blocks available", b"NT_STATUS"))
    return text is not None and "file.txt" in text and "blocks available" in text


def hold(server, share, user, held_list):
    held = server.held(share, user)
    held_list.append(held)
    return held


@pytest.fixture
def held_clients():
    held = []
    yield held
    for client in held:
        client.close()


# -- max connections ----------------------------------------------------------------------------
def test_max_connections_counts_every_clients_tree_connects(start, held_clients):
    server = start("", {"capped": "max connections = 2", "other": ""})
    first = hold(server, "capped", ALICE, held_clients)
    second = hold(server, "capped", BOB, held_clients)
    assert answers(first) and answers(second)
    # a third, by either account: refused; another share is not concerned
    for user in (ALICE, BOB):
        r = server.smbclient("capped", "ls", user=user)
        assert r.returncode != 0 and refused(r, "NT_STATUS_INSUFFICIENT_RESOURCES"), (user, output(r))
    r = server.smbclient("other", "ls", user=ALICE)
    assert r.returncode == 0, output(r)
    # a place frees when a client leaves, and the refusals above took none
    first.close()
    deadline = time.monotonic() + 10
    while True:
        r = server.smbclient("capped", "ls", user=ALICE)
        if r.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert r.returncode == 0 and "file.txt" in r.stdout, output(r)
    third = hold(server, "capped", ALICE, held_clients)
    assert answers(third) and answers(second)
    r = server.smbclient("capped", "ls", user=BOB)
    assert refused(r, "NT_STATUS_INSUFFICIENT_RESOURCES"), output(r)


# -- deadtime -----------------------------------------------------------------------------------
@pytest.mark.parametrize("deadtime", [DEADTIME_MINUTES, 0])
def test_deadtime_drops_an_idle_connection_with_nothing_open(start, held_clients, deadtime):
    server = start(f"deadtime = {deadtime}", {"s": ""})
    idle = hold(server, "s", ALICE, held_clients)
    busy = hold(server, "s", BOB, held_clients)
    assert answers(idle) and answers(busy)
    # BOB keeps a file open (smbclient's `open`): dropping him would lose it
    assert "fnum" in busy.ask("open file.txt", (b"fnum", b"NT_STATUS"))
    time.sleep(DEADTIME_MINUTES * 60 * 2 + 2)
    if deadtime:
        assert not answers(idle), "an idle connection outlived deadtime"
        assert "idle past deadtime" in server.log_text()
    else:
        assert answers(idle), "deadtime = 0 dropped a connection"
    assert answers(busy), "a connection with an open file was dropped"
