"""Who may reclaim a durable open: the account the server resolved at logon, not the name as
the client typed it. The same account logged on as "alice", "ALICE" or "SOMEDOMAIN\\Alice"
(a standalone server's local accounts ignore the domain) is one owner; another account is
refused, as MS-SMB2 3.3.5.9.7 says (STATUS_OBJECT_NAME_NOT_FOUND)."""
from __future__ import annotations

import os
import time

from servers import PASSWORD, USER
from smbconf_server import OTHER, OTHER_PASSWORD, smbconf  # noqa: F401  (the fixture)
from test_durable import Conn, dh2q, dhnc, dh2c, durable_open, reconnect, start

from smbring.smb import wire


def test_the_same_account_spelled_otherwise_reclaims_it(smbconf):
    server = start(smbconf)
    for spelling in (USER.upper(), f"SOMEDOMAIN\\{USER.capitalize()}", f"workgroup\\{USER}"):
        c = Conn(server)
        fid = durable_open(c, "mine")
        c.kill()
        again = Conn(server, spelling, PASSWORD)
        r = reconnect(again, dhnc(fid))
        assert r.status == wire.STATUS_SUCCESS, (spelling, r)
        assert again.tree.close(r.file_id).status == wire.STATUS_SUCCESS


def test_a_v2_open_and_its_replay_are_the_account_s(smbconf):
    server = start(smbconf)
    c = Conn(server)
    guid = os.urandom(16)
    r = c.create("v2", contexts=[dh2q(guid)])
    assert r.status == wire.STATUS_SUCCESS and b"DH2Q" in r.raw[r.raw.find(b"DH2Q") - 4:]
    c.kill()
    thief = Conn(server, OTHER, OTHER_PASSWORD)
    time.sleep(0.5)
    assert reconnect(thief, dh2c(r.file_id, guid), wait=0).status == wire.STATUS_OBJECT_NAME_NOT_FOUND
    again = Conn(server, f"Elsewhere\\{USER.upper()}", PASSWORD)
    assert reconnect(again, dh2c(r.file_id, guid)).status == wire.STATUS_SUCCESS


def test_another_account_is_refused_whatever_its_spelling(smbconf):
    server = start(smbconf)
    c = Conn(server)
    fid = durable_open(c, "mine")
    c.kill()
    time.sleep(0.5)
    for spelling in (OTHER, f"SOMEDOMAIN\\{OTHER}"):
        thief = Conn(server, spelling, OTHER_PASSWORD)
        assert reconnect(thief, dhnc(fid), wait=0).status == wire.STATUS_OBJECT_NAME_NOT_FOUND, spelling
    assert reconnect(Conn(server), dhnc(fid)).status == wire.STATUS_SUCCESS
