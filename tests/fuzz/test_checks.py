"""The harness's checks can fail: each is shown a core that breaks the rule it guards (a fault
put into a real connection, on real files), and must say so."""
import os

import pytest

import make_corpus as mc
import smbfuzz_input as fi
from smbfuzz_client import Client
from smbfuzz_findings import Finding

from smbring.smb import connection, effects, security, wire
from smbring.smb.errors import SMBError
from smbring.smb.notify import Watch


def logged_on(world) -> Client:
    world.reset()
    return Client(world, fi.Mode(mc.SMB302))


def send(client: Client, command: int, body: bytes, **spec) -> None:
    client.send_frame(fi.Frame(messages=[fi.Message(fi.Spec(command, **spec), body)]))


def echo(client: Client, **spec) -> None:
    send(client, wire.ECHO, mc.simple(), **spec)


def test_a_replayed_message_id_is_refused(world):
    client = logged_on(world)
    echo(client)
    echo(client, mid=fi.MID_REUSE)
    assert not client.alive


def test_a_replay_the_server_takes_is_a_finding(world):
    client = logged_on(world)
    # no window at all: every MessageId taken, a credit granted (CreditWindow.take: what
    # a request's consume and grant go through)
    client.conn.credits.take = lambda message_id, charge, requested: 0 if requested is None else 1
    echo(client)
    with pytest.raises(Finding, match="credit-replay"):
        echo(client, mid=fi.MID_REUSE)


def test_a_granted_message_id_the_server_refuses_is_a_finding(world):
    client = logged_on(world)
    client.conn.credits.take = lambda message_id, charge, requested: -1 if message_id is not None else 1
    with pytest.raises(Finding, match="credit-refused"):
        echo(client)


def test_a_message_id_never_granted_is_refused(world):
    client = logged_on(world)
    echo(client, mid=fi.MID_RANDOM + 20)       # 2**28 ids ahead
    assert not client.alive


def test_an_effect_on_a_descriptor_the_connection_does_not_hold_is_a_finding(world):
    client = logged_on(world)
    fd = os.open(os.path.join(world.root, "canary.txt"), os.O_RDONLY)
    try:
        with pytest.raises(Finding, match="none of the connection's open files"):
            client.shell.run([effects.Send(b"", effects.FileRange(fd, 0, 10, "rw"))])
    finally:
        os.close(fd)


def test_an_open_that_outlives_its_session_is_a_finding(world):
    client = logged_on(world)
    send(client, wire.CREATE, mc.create("f.txt"))
    assert client.conn.opens
    del client.conn.sessions[client.sessions[fi.USER]]     # as if the session ended alone
    with pytest.raises(Finding, match="outlived its session"):
        client.check_opens()
    client.disconnect()


def test_what_the_server_state_keeps_after_close_all_is_a_finding(world):
    client = logged_on(world)
    client.disconnect()
    client.check_left_nothing()
    client.state.watches.add(Watch(world.rw, 1, False))
    with pytest.raises(Finding, match="change-notify watch"):
        client.check_left_nothing()


def test_a_table_the_public_checks_do_not_name_is_checked_too(world):
    client = logged_on(world)
    client.disconnect()
    client.state.locks.wait(("a file", 1), retry=lambda: None)     # a waiter on no open's file
    with pytest.raises(Finding, match="ServerState"):
        client.check_left_nothing()


def test_a_held_write_is_written_before_the_next_request(world):
    """WRITEs held in the background (mode bit 3) are written when the core drains them: the
    READ after them sees their data."""
    world.reset()
    client = Client(world, fi.Mode(mc.SMB302 | 8))
    send(client, wire.CREATE, mc.create("held.txt", disposition=wire.FILE_OVERWRITE_IF))
    send(client, wire.WRITE, mc.write(b"abc"), fid=mc.NEWEST)
    assert client.shell.held, "the lone WRITE was not left to run in the background"
    send(client, wire.READ, mc.read(3), fid=mc.NEWEST)
    assert not client.shell.held
    assert client.statuses[-2:] == [(wire.WRITE, 0), (wire.READ, 0)]
    client.disconnect()
    with open(os.path.join(world.rw, "held.txt"), "rb") as f:
        assert f.read() == b"abc"


def test_the_window_model_follows_the_grants():
    from smbfuzz_credits import OK, REFUSED, UNKNOWN, ClientWindow
    w = ClientWindow()
    assert w.judge([(0, 1)]) == OK and w.judge([(1, 1)]) == REFUSED
    w.take([(0, 1)])
    w.grant(4)
    assert w.judge([(1, 4)]) == OK and w.judge([(2, 4)]) == REFUSED and w.judge([(0, 1)]) == REFUSED
    w.all_answers_seen = False
    assert w.judge([(2, 4)]) == UNKNOWN and w.judge([(0, 1)]) == REFUSED


def test_an_encrypted_share_reached_unencrypted_is_a_finding(world):
    client = logged_on(world)
    send(client, wire.TREE_CONNECT, mc.tree_connect("\\\\srv\\enc"))
    send(client, wire.CREATE, mc.create("a", disposition=wire.FILE_OPEN), tree=fi.TREE_LAST)
    assert client.statuses[-1] == (wire.CREATE, wire.STATUS_ACCESS_DENIED)
    client.conn.shares["enc"].encrypt = False        # the core forgets what the share requires
    with pytest.raises(Finding, match="unsealed-share-access"):
        send(client, wire.CREATE, mc.create("a", disposition=wire.FILE_OPEN), tree=fi.TREE_LAST)
    client.disconnect()



# a request that is the first of its chain yet says it is related, signed by the user's
# session: refused INVALID_PARAMETER before any key is looked up, its answer made from its
# header (the SIGNED flag and the client's own signature kept, as smbd answers it)
RELATED_AND_SIGNED = 0x01 | 0x02        # (smbfuzz_input.FLAG_BITS)


def test_an_answer_signed_with_a_wrong_key_is_a_finding(world, monkeypatch):
    client = logged_on(world)

    class WrongKey:     # the server's security module, signing with a key of zeros
        def __getattr__(self, name):
            return getattr(security, name)

        @staticmethod
        def apply_signature(algorithm, key, part):
            security.apply_signature(algorithm, bytes(len(key)), part)
    monkeypatch.setattr(connection, "security", WrongKey())
    with pytest.raises(Finding, match="bad signature"):
        echo(client, flags=0x02)


def test_an_echoed_signature_passes_for_the_statuses_smbd_echoes_only(world, monkeypatch):
    client = logged_on(world)
    send(client, wire.QUERY_INFO, mc.query_info(), flags=RELATED_AND_SIGNED)
    assert client.statuses[-1] == (wire.QUERY_INFO, wire.STATUS_INVALID_PARAMETER)
    # the same answer with a signature other than the request's
    answered = connection._answered_as_named

    def forged(rhdr, hdr, msg, *sealed):
        answered(rhdr, hdr, msg, *sealed)
        rhdr.signature = bytes(16)
    monkeypatch.setattr(connection, "_answered_as_named", forged)
    with pytest.raises(Finding, match="bad signature"):
        send(client, wire.QUERY_INFO, mc.query_info(), flags=RELATED_AND_SIGNED)


def test_an_echoed_signature_on_another_status_is_a_finding(world, monkeypatch):
    client = logged_on(world)
    answered = connection._answered_as_named

    def denied(rhdr, hdr, msg, *sealed):    # the same answer, with a status smbd answers signed
        answered(rhdr, hdr, msg, *sealed)
        raise SMBError(wire.STATUS_ACCESS_DENIED)
    monkeypatch.setattr(connection, "_answered_as_named", denied)
    with pytest.raises(Finding, match="bad signature"):
        send(client, wire.QUERY_INFO, mc.query_info(), flags=RELATED_AND_SIGNED)
