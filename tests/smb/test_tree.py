"""TREE_CONNECT and TREE_DISCONNECT through the sans-I/O connection (MS-SMB2 3.3.5.7, 3.3.5.8):
which share a path names, what the response says of it, who may connect, how many trees a
session may hold, and what a disconnect leaves behind."""
import struct

import pytest
from smbcore import create_body, tree_connect_body

from smbring.smb import wire
from smbring.smb.limits import Limits
from smbring.smb.state import Session


def tree_response(body):
    """(ShareType, ShareFlags, MaximalAccess) of a TREE_CONNECT response."""
    _size, share_type, _r, flags, _caps, access = struct.unpack_from("<HBBIII", body, 0)
    return share_type, flags, access


@pytest.mark.parametrize("path", ["\\\\x\\s", "\\\\server.example\\S", "s"])
def test_a_share_is_named_by_the_last_component_whatever_its_case(client, path):
    status, tid, body = client.tree_connect(path)
    assert status == wire.STATUS_SUCCESS and tid not in (0, client.tid)
    assert tree_response(body) == (wire.SHARE_TYPE_DISK, 0, wire.FILE_ALL_ACCESS)


def test_each_connect_gets_a_tree_of_its_own(client):
    tids = {client.tree_connect()[1] for _ in range(3)}
    assert len(tids | {client.tid}) == 4


def test_a_read_only_share_offers_read_access_only(clients):
    c = clients(share={"read_only": True})
    _status, _tid, body = c.tree_connect()
    assert tree_response(body)[2] == wire.READ_ONLY_ACCESS


@pytest.mark.parametrize("rule", ["hide_unreadable", "hide_unwriteable"])
def test_a_share_hiding_by_access_says_so(clients, rule):
    """SMB2_SHAREFLAG_ACCESS_BASED_DIRECTORY_ENUM (MS-SMB2 3.3.5.7), where Samba says it."""
    _status, _tid, body = clients(share={rule: True}).tree_connect()
    assert tree_response(body)[1] == 0x800


@pytest.mark.parametrize("path", ["\\\\x\\nosuch", "\\\\x\\", "\\\\x\\s\\sub", ""])
def test_an_unknown_share_is_a_bad_network_name(client, path):
    status, _tid, _body = client.tree_connect(path)
    assert status == wire.STATUS_BAD_NETWORK_NAME


def test_ipc_is_a_pipe_share_without_files(client):
    status, tid, body = client.tree_connect("\\\\x\\IPC$")
    assert status == wire.STATUS_SUCCESS
    assert tree_response(body)[0] == wire.SHARE_TYPE_PIPE
    status, _ = client.request(wire.CREATE, create_body("srvsvc", wire.GENERIC_READ, wire.FILE_OPEN, 0),
                               tree_id=tid)
    assert status == wire.STATUS_SUCCESS             # a named pipe (tests/smb/test_rpc_pipe.py)
    status, _ = client.request(wire.CREATE, create_body("f", wire.GENERIC_READ, wire.FILE_OPEN, 0),
                               tree_id=tid)
    assert status == wire.STATUS_OBJECT_NAME_NOT_FOUND   # no files


def test_a_path_outside_the_message_is_an_invalid_parameter(client):
    body = bytearray(tree_connect_body("\\\\x\\s"))
    struct.pack_into("<HH", body, 4, 72, 200)          # PathLength past the message's end
    assert client.request(wire.TREE_CONNECT, bytes(body))[0] == wire.STATUS_INVALID_PARAMETER


def test_tree_connect_needs_a_session(client):
    status, _tid, _body = client.tree_connect(session_id=7)
    assert status == wire.STATUS_USER_SESSION_DELETED


def test_a_guest_reaches_guest_shares_only(clients):
    refused = clients()
    refused.conn.sessions[2] = Session(id=2, valid=True, guest=True)
    assert refused.tree_connect(session_id=2)[0] == wire.STATUS_ACCESS_DENIED
    allowed = clients(share={"guest_ok": True})
    allowed.conn.sessions[2] = Session(id=2, valid=True, guest=True)
    assert allowed.tree_connect(session_id=2)[0] == wire.STATUS_SUCCESS


def test_valid_users_are_the_only_ones_let_in(clients):
    c = clients(share={"valid_users": ["alice"]}, tree=False)
    c.conn.sessions[2] = Session(id=2, valid=True, user="DOMAIN\\Alice")
    c.conn.sessions[3] = Session(id=3, valid=True, user="bob")
    assert c.tree_connect(session_id=2)[0] == wire.STATUS_SUCCESS
    assert c.tree_connect(session_id=3)[0] == wire.STATUS_ACCESS_DENIED


def test_an_encrypted_share_refuses_a_client_that_cannot_encrypt(clients):
    c = clients(share={"encrypt": True}, tree=False)
    assert c.tree_connect()[0] == wire.STATUS_ACCESS_DENIED      # no cipher negotiated
    c.conn.cipher = 1
    status, _tid, body = c.tree_connect()
    assert status == wire.STATUS_SUCCESS
    assert tree_response(body)[1] == 0x8000                        # SHAREFLAG_ENCRYPT_DATA


def test_max_trees_per_session(clients):
    c = clients(limits=Limits(max_trees=3))   # its own tree is the first
    extra = [c.tree_connect()[1], c.tree_connect("\\\\x\\IPC$")[1]]
    assert c.tree_connect()[0] == wire.STATUS_INSUFFICIENT_RESOURCES
    assert c.tree_connect("\\\\x\\IPC$")[0] == wire.STATUS_INSUFFICIENT_RESOURCES
    c.conn.sessions[2] = Session(id=2, valid=True)    # the bound is per session
    assert c.tree_connect(session_id=2)[0] == wire.STATUS_SUCCESS
    assert c.tree_disconnect(extra[1]) == wire.STATUS_SUCCESS
    assert c.tree_connect()[0] == wire.STATUS_SUCCESS  # a slot freed


def test_disconnect_ends_the_tree(client):
    _status, tid, _body = client.tree_connect()
    assert client.tree_disconnect(tid) == wire.STATUS_SUCCESS
    assert client.tree_disconnect(tid) == wire.STATUS_NETWORK_NAME_DELETED
    status, _ = client.request(wire.CREATE, create_body("f", wire.GENERIC_READ, wire.FILE_OPEN_IF, 0), tree_id=tid)
    assert status == wire.STATUS_NETWORK_NAME_DELETED
    assert client.create("f")[0] == wire.STATUS_SUCCESS     # the other tree lives on


def test_disconnect_closes_the_trees_opens_only(client, share):
    _status, tid, _body = client.tree_connect()
    status, body = client.request(wire.CREATE, create_body("doomed", wire.FILE_ALL_ACCESS, wire.FILE_CREATE,
                                                           wire.FILE_DELETE_ON_CLOSE), tree_id=tid)
    assert status == wire.STATUS_SUCCESS
    kept = client.open("kept")
    assert (share / "doomed").exists()
    assert client.tree_disconnect(tid) == wire.STATUS_SUCCESS
    assert not (share / "doomed").exists()       # closed as a CLOSE would: deleted on close
    assert list(client.conn.opens) == [kept]
    assert client.close(kept) == wire.STATUS_SUCCESS


def test_a_tree_of_another_session_is_not_found(client):
    client.conn.sessions[2] = Session(id=2, valid=True)
    status, _ = client.request(wire.CREATE, create_body("f", wire.GENERIC_READ, wire.FILE_OPEN_IF, 0), session_id=2)
    assert status == wire.STATUS_NETWORK_NAME_DELETED
    assert client.request(wire.TREE_DISCONNECT, b"\4\0\0\0", session_id=2)[0] == wire.STATUS_NETWORK_NAME_DELETED


@pytest.mark.parametrize("policy", [0x00, 0x10, 0x20, 0x30])
def test_the_csc_policy_is_the_shares_caching_flags(clients, policy):
    """smb.conf's `csc policy` (manual, documents, programs, disable: config reads them to
    these values), in ShareFlags as Samba sends it: `disable` tells clients to keep no offline
    copies of the share's files."""
    _status, _tid, body = clients(share={"csc_policy": policy}).tree_connect()
    assert tree_response(body)[1] == policy
