"""The credits a client holds, counted as a client counts them (MS-SMB2 3.2.4.1.6, 3.3.1.2): each
request spends its CreditCharge (a CANCEL none), each answer adds its CreditResponse. A client
that asks with every request for what the request spends must hold as many credits after any
exchange as before it, whatever the answers were: errors, compounds (a member failing, an
async request ending one), the interim and final answers of an async request, a cancelled one,
the logon's SESSION_SETUP legs, a failed logon. Were one of them to grant less than it took, a
client that keeps few credits (smbprotocol keeps what its logon was granted and asks for one a
request) would come down to none, and could send nothing more."""
import struct

import spnego
import pytest
import smbcore
from sansio_client import FILE_DIRECTORY_FILE, message, sent, split
from smbcore import SHORT_BODY, compound
from test_ntlm import HASHES, PASSWORD, USER

from smbring.server.users import PasswordLookup
from smbring.smb import wire
from smbring.smb.connection import Connection
from smbring.smb.state import Share
from smbring.vfs.posix import PosixVFS

RELATED_FID = b"\xff" * 16
KiB = 1024


class Ledger:
    """The client's count of its credits, kept over the exchanges of a sans-I/O connection."""

    def __init__(self, conn: Connection, held: int):
        self.conn = conn
        self.held = held

    def exchange(self, frame: bytes) -> list[tuple[wire.Header, bytes]]:
        """Sends a frame (spending its requests' charges) and counts what its answers grant."""
        for request in split(frame):
            hdr = wire.Header.parse(request)
            if hdr.command != wire.CANCEL:
                self.held -= max(hdr.credit_charge, 1) if self.conn.dialect > wire.SMB202 else 1
        return self.count(sent(self.conn.handle_frame(frame)))

    def late(self) -> list[tuple[wire.Header, bytes]]:
        """Answers made outside a frame (async requests completed meanwhile)."""
        return self.count(sent(self.conn.outbox_drain()))

    def count(self, answers):
        self.held += sum(h.credits for h, _ in answers)
        return answers

    def agrees(self) -> bool:
        """With nothing in flight, the client holds what the server says it granted."""
        return self.held == self.conn.credits.granted


@pytest.fixture
def client(clients):
    """A client holding 8 credits after its tree connect, asking for one with each request."""
    c = clients(credits=8)
    c.credits = 1
    return c


@pytest.fixture
def ledger(client):
    book = Ledger(client.conn, client.conn.credits.granted)
    assert book.held == 8
    yield book
    assert book.held == 8 and book.agrees()


def one(ledger, client, command, body, **header):
    """The answer to a request of the client's session and tree (its own, when
    given: `session_id`, `tree_id`, `charge`, `credits`)."""
    [(h, _body)] = ledger.exchange(client.message(command, body, **header))
    assert ledger.held == 8, (hex(h.status), h.credits)
    return h


def create(name, disposition=wire.FILE_OPEN_IF, options=0):
    return smbcore.create_body(name, 0x001F01FF, disposition, options)


def lock(fid, flags):
    return smbcore.lock_body(fid, [(0, 10, flags)])


@pytest.mark.parametrize("command, body, header, status", [
    (wire.ECHO, SHORT_BODY, {}, wire.STATUS_SUCCESS),
    (wire.ECHO, SHORT_BODY, {"credits": 0}, wire.STATUS_SUCCESS),     # asking for none
    (wire.CREATE, create("missing", wire.FILE_OPEN), {}, wire.STATUS_OBJECT_NAME_NOT_FOUND),
    (wire.CREATE, create("f"), {"session_id": 99}, wire.STATUS_USER_SESSION_DELETED),
    (wire.CREATE, create("f"), {"tree_id": 77}, wire.STATUS_NETWORK_NAME_DELETED),
    (wire.CLOSE, SHORT_BODY, {}, wire.STATUS_INVALID_PARAMETER),      # a wrong StructureSize
    (0x55, SHORT_BODY, {}, wire.STATUS_INVALID_PARAMETER),            # no such command
    (wire.READ, smbcore.read_body(b"\0" * 16, 128 * KiB), {"charge": 1},
     wire.STATUS_INVALID_PARAMETER),                                   # a charge too small
])
def test_an_answer_grants_what_its_request_spent(client, ledger, command, body, header, status):
    assert one(ledger, client, command, body, **header).status == status


def test_a_multi_credit_request_gets_its_charge_back(client, ledger, share):
    (share / "large").write_bytes(b"x" * (128 * KiB))
    fid = client.open("large")
    ledger.held = client.conn.credits.granted        # (the open's own request: counted as spent and granted)
    h = one(ledger, client, wire.READ, smbcore.read_body(fid, 128 * KiB), charge=2, credits=2)
    assert h.status == wire.STATUS_SUCCESS and h.credits == 2


@pytest.mark.parametrize("related", [True, False])
@pytest.mark.parametrize("first", ["new", "missing"])
def test_every_member_of_a_compound_grants_what_it_spent(client, ledger, related, first):
    """A compound whose members succeed, or whose first fails and takes the related rest
    with it (unrelated, the rest fail on their own: no such FileId)."""
    fid = RELATED_FID if related else b"\0" * 16
    disposition = wire.FILE_CREATE if first == "new" else wire.FILE_OPEN
    frame = compound([client.message(wire.CREATE, create(first, disposition)),
                      client.message(wire.WRITE, smbcore.write_body(fid, b"data")),
                      client.message(wire.READ, smbcore.read_body(fid, 4)),
                      client.message(wire.CLOSE, smbcore.close_body(fid))], related=related)
    answers = ledger.exchange(frame)
    assert len(answers) == 4 and all(h.credits == 1 for h, _ in answers)
    assert (answers[0][0].status == wire.STATUS_SUCCESS) == (first == "new")
    assert ledger.held == 8


def cancel(client, target: wire.Header) -> bytes:
    """A CANCEL of an async request (by its AsyncId): no MessageId of its own."""
    return message(wire.CANCEL, SHORT_BODY, session_id=1, message_id=0, flags=wire.FLAGS_ASYNC,
                   async_id=target.async_id, credits=0)


@pytest.mark.parametrize("ending", ["completed", "cancelled"])
def test_an_async_request_grants_with_its_interim_answer_and_not_again(client, ledger, share, ending):
    (share / "f").write_bytes(b"x" * 10)
    holder, waiter = client.open("f"), client.open("f")
    ledger.held = client.conn.credits.granted
    assert one(ledger, client, wire.LOCK, lock(holder, wire.LOCK_EXCLUSIVE)).status == wire.STATUS_SUCCESS
    interim = one(ledger, client, wire.LOCK, lock(waiter, wire.LOCK_EXCLUSIVE))
    assert interim.status == wire.STATUS_PENDING and interim.credits == 1
    if ending == "completed":
        answers = ledger.exchange(client.message(wire.LOCK, lock(holder, wire.LOCK_UNLOCK)))
        final = next(h for h, _ in answers if h.message_id == interim.message_id)
        assert final.status == wire.STATUS_SUCCESS
    else:
        [(final, _)] = ledger.exchange(cancel(client, interim))
        assert final.status == wire.STATUS_CANCELLED
    assert final.credits == 0 and ledger.held == 8 and ledger.agrees()


def test_a_change_notify_cancelled_by_its_async_id(client, ledger):
    directory = client.open("d", options=FILE_DIRECTORY_FILE)
    ledger.held = client.conn.credits.granted
    interim = one(ledger, client, wire.CHANGE_NOTIFY, smbcore.change_notify_body(directory))
    assert interim.status == wire.STATUS_PENDING
    [(final, _)] = ledger.exchange(cancel(client, interim))
    assert final.status == wire.STATUS_CANCELLED and final.credits == 0
    assert ledger.late() == []


def test_a_compound_ending_in_an_async_request(client, ledger, share):
    """CREATE and a LOCK on what it opened, the LOCK waiting for another open's lock: the
    CREATE's answer and the LOCK's interim one grant; the LOCK's final one, later, none."""
    (share / "f").write_bytes(b"x" * 10)
    holder = client.open("f")
    ledger.held = client.conn.credits.granted
    one(ledger, client, wire.LOCK, lock(holder, wire.LOCK_EXCLUSIVE))
    answers = ledger.exchange(compound([client.message(wire.CREATE, create("f")),
                                        client.message(wire.LOCK, lock(RELATED_FID, wire.LOCK_EXCLUSIVE))],
                                       related=True))
    assert [h.status for h, _ in answers] == [wire.STATUS_SUCCESS, wire.STATUS_PENDING]
    assert ledger.held == 8
    answers = ledger.exchange(client.message(wire.LOCK, lock(holder, wire.LOCK_UNLOCK)))
    assert sorted(h.status for h, _ in answers) == [wire.STATUS_SUCCESS] * 2
    assert ledger.held == 8


# -- from NEGOTIATE on ------------------------------------------------------------------------
@pytest.fixture
def fresh(tmp_path):
    """A connection before NEGOTIATE whose password file holds USER."""
    passdb = tmp_path / "passdb"
    passdb.write_text(f"{USER}:1000:{'0' * 32}:{HASHES[USER].hex().upper()}:[U]:LCT-00000000\n")
    conn = Connection({"s": Share("s", str(tmp_path))}, lookup=PasswordLookup(str(passdb)), open_fs=PosixVFS)
    yield conn
    conn.close_all()


def setup_leg(token: bytes, message_id: int, session_id: int) -> bytes:
    return message(wire.SESSION_SETUP, smbcore.session_setup_body(token), message_id=message_id,
                   session_id=session_id, credits=1)


def logon(book: Ledger, password: str, first_id: int) -> tuple[int, int]:
    """(status, MessageId next) of an NTLM logon, each leg asking for one credit."""
    ntlm = spnego.client(USER, password, hostname="s", protocol="ntlm")
    [(h, body)] = book.exchange(setup_leg(ntlm.step(), first_id, 0))
    assert h.status == wire.STATUS_MORE_PROCESSING_REQUIRED and book.held == 1
    offset, length = struct.unpack_from("<HH", body, 4)
    reply = body[offset - 64:offset - 64 + length]
    [(h, _)] = book.exchange(setup_leg(ntlm.step(reply), first_id + 1, h.session_id))
    assert book.held == 1
    return h.status, first_id + 2


def test_negotiate_grants_the_one_credit_a_client_asking_for_none_must_hold(fresh):
    """NEGOTIATE as smbprotocol sends it (CreditRequest 0): one credit, the least MS-SMB2
    3.3.1.2 allows and the most it lets a server grant to a request for none (Samba grants
    the same). The logon's legs, each asking for one, then keep it: a failed logon too."""
    book = Ledger(fresh, 1)
    [(h, _)] = book.exchange(message(wire.NEGOTIATE, smbcore.negotiate_body([wire.SMB302], 1, 0, b"\1" * 16),
                                     message_id=0, credits=0))
    assert h.status == wire.STATUS_SUCCESS and h.credits == 1 and book.held == 1
    status, next_id = logon(book, "wrong", 1)
    assert status == wire.STATUS_LOGON_FAILURE
    status, next_id = logon(book, PASSWORD, next_id)
    assert status == wire.STATUS_SUCCESS
    assert book.held == 1 and book.agrees()
