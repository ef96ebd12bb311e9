"""NEGOTIATE through the sans-I/O connection (MS-SMB2 3.3.5.3, 3.3.5.4): the dialect chosen, what
the response announces (sizes, capabilities, security mode, 3.1.1 contexts and the preauth
hash), the SMB1 multi-protocol NEGOTIATE before it, and the negotiates a connection refuses."""
import hashlib
import struct

import pytest
from sansio_client import connection, message, parse, sent
from smbcore import negotiate_body, negotiate_contexts, smb1_negotiate_message

from smbring.smb import security, wire
from smbring.smb.limits import MAX_IO

GUID = bytes(range(16))
ALL_CIPHERS = (security.AES_128_CCM, security.AES_128_GCM, security.AES_256_CCM, security.AES_256_GCM)
ALL_SIGNING = (security.HMAC_SHA256, security.AES_CMAC, security.AES_GMAC)


@pytest.fixture
def conn(tmp_path):
    return connection(tmp_path)


def negotiate_request(dialects, *, caps=wire.CAP_ENCRYPTION, ciphers=ALL_CIPHERS, signing=ALL_SIGNING,
                      message_id=0, flags=0) -> bytes:
    contexts = negotiate_contexts(ciphers, signing) if wire.SMB311 in dialects else []
    return message(wire.NEGOTIATE, negotiate_body(dialects, wire.SECURITY_SIGNING_ENABLED, caps, GUID, contexts),
                   message_id=message_id, credits=1, flags=flags)


def negotiate(conn, dialects, **kw):
    """(the response's header, its fields, its contexts by type, the whole message); an error
    response has no fields nor contexts."""
    request = negotiate_request(dialects, **kw)
    [response] = [bytes(e.message) for e in conn.handle_frame(request)]
    header, body = parse(response)
    if header.status:
        return header, None, None, response
    return header, response_fields(body), response_contexts(response), response


def response_fields(body: bytes) -> dict:
    (_size, secmode, dialect, ctx_count, guid, caps, max_transact, max_read, max_write, _time, _start,
     sec_off, sec_len, ctx_off) = struct.unpack_from("<HHHH16sIIIIQQHHI", body, 0)
    return dict(security_mode=secmode, dialect=dialect, context_count=ctx_count, guid=guid, caps=caps,
                sizes=(max_transact, max_read, max_write), security_buffer=body[sec_off - 64:sec_off - 64 + sec_len],
                context_offset=ctx_off)


def response_contexts(response: bytes) -> dict[int, bytes]:
    fields = response_fields(response[64:])
    found, pos = {}, fields["context_offset"]
    for _ in range(fields["context_count"]):
        ctype, length = struct.unpack_from("<HH", response, pos)
        found[ctype] = response[pos + 8:pos + 8 + length]
        pos = wire.pad8(pos + 8 + length)
    return found


@pytest.mark.parametrize("offered, chosen", [
    ([wire.SMB202], wire.SMB202),
    ([wire.SMB202, wire.SMB210], wire.SMB210),
    ([wire.SMB300, wire.SMB210, wire.SMB202], wire.SMB300),
    ([wire.SMB302, wire.SMB300], wire.SMB302),
    ([wire.SMB202, wire.SMB311, wire.SMB302], wire.SMB311),
    ([0x0222, wire.SMB302, 0x0FFF], wire.SMB302),          # unknown dialects are passed over
])
def test_the_highest_dialect_both_know_is_chosen(conn, offered, chosen):
    header, fields, _contexts, _ = negotiate(conn, offered)
    assert header.status == wire.STATUS_SUCCESS
    assert fields["dialect"] == conn.dialect == chosen
    assert fields["guid"] == conn.server_guid
    assert fields["security_buffer"]            # the SPNEGO hint: NTLMSSP


def test_no_dialect_in_common_is_not_supported(conn):
    header, *_ = negotiate(conn, [0x0222, 0x02FF])
    assert header.status == wire.STATUS_NOT_SUPPORTED
    assert conn.dialect == 0


def test_a_dialect_count_of_zero_is_an_invalid_parameter(conn):
    header, *_ = negotiate(conn, [])
    assert header.status == wire.STATUS_INVALID_PARAMETER
    assert conn.dialect == 0


def test_a_dialect_count_past_the_message_is_an_invalid_parameter(conn):
    body = bytearray(negotiate_body([wire.SMB302], wire.SECURITY_SIGNING_ENABLED, 0, GUID))
    struct.pack_into("<H", body, 2, 500)                   # DialectCount
    [(header, _)] = sent(conn.handle_frame(message(wire.NEGOTIATE, bytes(body), credits=1)))
    assert header.status == wire.STATUS_INVALID_PARAMETER
    assert conn.dialect == 0


def malformed_311_negotiate(message_id=0) -> bytes:
    """A 3.1.1 NEGOTIATE whose NegotiateContextOffset points past the message."""
    body = bytearray(negotiate_body([wire.SMB311], wire.SECURITY_SIGNING_ENABLED, 0, GUID,
                                    negotiate_contexts(ALL_CIPHERS, ALL_SIGNING)))
    struct.pack_into("<I", body, 28, 0xFFF0)
    return message(wire.NEGOTIATE, bytes(body), message_id=message_id, credits=1)


def test_negotiate_contexts_outside_the_message_are_an_invalid_parameter(conn):
    [(header, _)] = sent(conn.handle_frame(malformed_311_negotiate()))
    assert header.status == wire.STATUS_INVALID_PARAMETER


def test_a_negotiate_refused_for_its_contexts_leaves_the_connection_unnegotiated(conn):
    sent(conn.handle_frame(malformed_311_negotiate()))
    assert conn.dialect == 0
    header, *_ = negotiate(conn, [wire.SMB311], message_id=1)
    assert header.status == wire.STATUS_SUCCESS


def test_a_signed_negotiate_is_an_invalid_parameter(conn):
    header, *_ = negotiate(conn, [wire.SMB302], flags=wire.FLAGS_SIGNED)
    assert header.status == wire.STATUS_INVALID_PARAMETER
    assert conn.dialect == 0


@pytest.mark.parametrize("dialect, size", [(wire.SMB202, 65536), (wire.SMB210, MAX_IO), (wire.SMB302, MAX_IO),
                                           (wire.SMB311, MAX_IO)])
def test_max_read_write_and_transact_size(conn, dialect, size):
    _h, fields, _c, _ = negotiate(conn, [dialect])
    assert fields["sizes"] == (size, size, size)
    assert conn.max_io(wire.READ) == conn.max_io(wire.WRITE) == conn.max_io(wire.IOCTL) == size


def test_smb2_max_read_write_and_trans_are_announced_and_held_to(conn):
    """`smb2 max read`, `write`, `trans`: NEGOTIATE says them (MaxTransactSize, MaxReadSize,
    MaxWriteSize), each bounds its own requests; SMB 2.0.2's stay 64 KiB."""
    conn.limits.max_read, conn.limits.max_write, conn.limits.max_trans = 1 << 20, 256 << 10, 128 << 10
    _h, fields, _c, _ = negotiate(conn, [wire.SMB311])
    assert fields["sizes"] == (128 << 10, 1 << 20, 256 << 10)
    assert (conn.max_io(wire.READ), conn.max_io(wire.WRITE), conn.max_io(wire.QUERY_INFO)) == \
        (1 << 20, 256 << 10, 128 << 10)


@pytest.mark.parametrize("dialect, client_caps, caps, cipher", [
    (wire.SMB202, wire.CAP_ENCRYPTION, 0, 0),
    (wire.SMB210, wire.CAP_ENCRYPTION, wire.CAP_LARGE_MTU, 0),
    (wire.SMB300, wire.CAP_ENCRYPTION, wire.CAP_LARGE_MTU | wire.CAP_ENCRYPTION, security.AES_128_CCM),
    (wire.SMB302, wire.CAP_ENCRYPTION, wire.CAP_LARGE_MTU | wire.CAP_ENCRYPTION, security.AES_128_CCM),
    (wire.SMB302, 0, wire.CAP_LARGE_MTU, 0),                  # the client cannot encrypt
    # 3.1.1: the cipher is chosen by a context, never announced as a capability
    (wire.SMB311, wire.CAP_ENCRYPTION, wire.CAP_LARGE_MTU, security.AES_128_GCM),
    # directory leasing (`smb3 directory leases`, on by default) where the client announces it,
    # on SMB 3 (as Samba)
    (wire.SMB311, wire.CAP_DIRECTORY_LEASING, wire.CAP_LARGE_MTU | wire.CAP_DIRECTORY_LEASING,
     security.AES_128_GCM),
    (wire.SMB300, wire.CAP_DIRECTORY_LEASING, wire.CAP_LARGE_MTU | wire.CAP_DIRECTORY_LEASING, 0),
    (wire.SMB210, wire.CAP_DIRECTORY_LEASING, wire.CAP_LARGE_MTU, 0),
])
def test_capabilities_and_cipher(conn, dialect, client_caps, caps, cipher):
    _h, fields, _c, _ = negotiate(conn, [dialect], caps=client_caps)
    # SMB 3 also announces multichannel (`server multi channel support`, on by default), 2.1
    # and later leasing (`smb2 leases`, on by default), every dialect DFS (`host msdfs`, on
    # by default, as Samba)
    assert fields["caps"] == caps | (wire.CAP_MULTI_CHANNEL if dialect >= wire.SMB300 else 0) | \
        (wire.CAP_LEASING if dialect >= wire.SMB210 else 0) | wire.CAP_DFS
    assert conn.cipher == cipher


@pytest.mark.parametrize("signing_required, mode", [
    (False, wire.SECURITY_SIGNING_ENABLED),
    (True, wire.SECURITY_SIGNING_ENABLED | wire.SECURITY_SIGNING_REQUIRED),
])
def test_security_mode_says_whether_signing_is_required(tmp_path, signing_required, mode):
    conn = connection(tmp_path, signing_required=signing_required)
    _h, fields, _c, _ = negotiate(conn, [wire.SMB302])
    assert fields["security_mode"] == mode


def test_311_answers_a_preauth_context_with_sha512_and_a_fresh_salt(tmp_path):
    salts = []
    for _ in range(2):
        _h, _f, contexts, _ = negotiate(connection(tmp_path), [wire.SMB311])
        count, salt_len, algorithm = struct.unpack_from("<HHH", contexts[wire.PREAUTH_INTEGRITY_CAPABILITIES])
        assert (count, salt_len, algorithm) == (1, 32, wire.SHA512)
        salts.append(contexts[wire.PREAUTH_INTEGRITY_CAPABILITIES][6:])
    assert len(salts[0]) == 32 and salts[0] != salts[1]


def test_311_preauth_hash_covers_the_request_and_the_response_as_sent(conn):
    request = negotiate_request([wire.SMB311])
    [response] = [bytes(e.message) for e in conn.handle_frame(request)]
    expected = hashlib.sha512(hashlib.sha512(b"\0" * 64 + request).digest() + response).digest()
    assert conn.preauth.value == expected


def test_preauth_hash_is_left_alone_below_311(conn):
    negotiate(conn, [wire.SMB302])
    assert conn.preauth.value == b"\0" * 64


@pytest.mark.parametrize("offered, chosen", [
    (ALL_CIPHERS, security.AES_128_GCM),
    ((security.AES_256_CCM, security.AES_128_CCM), security.AES_128_CCM),
    ((security.AES_256_CCM, security.AES_256_GCM), security.AES_256_GCM),
    ((security.AES_256_CCM,), security.AES_256_CCM),
    ((0x77,), 0),                          # none known: no encryption (Cipher 0)
])
def test_311_cipher_is_the_servers_preference_among_those_offered(conn, offered, chosen):
    _h, _f, contexts, _ = negotiate(conn, [wire.SMB311], ciphers=offered)
    assert struct.unpack("<HH", contexts[wire.ENCRYPTION_CAPABILITIES]) == (1, chosen)
    assert conn.cipher == chosen


def test_311_without_an_encryption_context_has_no_cipher(conn):
    _h, _f, contexts, _ = negotiate(conn, [wire.SMB311], ciphers=())
    assert wire.ENCRYPTION_CAPABILITIES not in contexts
    assert conn.cipher == 0


@pytest.mark.parametrize("offered, chosen", [
    (ALL_SIGNING, security.AES_GMAC),
    ((security.HMAC_SHA256, security.AES_CMAC), security.AES_CMAC),
    ((security.HMAC_SHA256,), security.HMAC_SHA256),
])
def test_311_signing_algorithm_is_the_servers_preference_among_those_offered(conn, offered, chosen):
    _h, _f, contexts, _ = negotiate(conn, [wire.SMB311], signing=offered)
    assert struct.unpack("<HH", contexts[wire.SIGNING_CAPABILITIES]) == (1, chosen)
    assert conn.sign_algorithm() == chosen


def test_311_without_a_signing_context_signs_with_aes_cmac(conn):
    _h, _f, contexts, _ = negotiate(conn, [wire.SMB311], signing=())
    assert wire.SIGNING_CAPABILITIES not in contexts
    assert conn.sign_algorithm() == security.AES_CMAC


@pytest.mark.parametrize("dialect", [wire.SMB202, wire.SMB302, wire.SMB311])
def test_a_second_negotiate_drops_the_connection(conn, dialect):
    negotiate(conn, [dialect])
    with pytest.raises(ConnectionError):
        conn.handle_frame(negotiate_request([dialect], message_id=1))
    assert conn.dialect == dialect


def test_a_second_negotiate_after_a_failed_one_is_answered(conn):
    assert negotiate(conn, [0x0222])[0].status == wire.STATUS_NOT_SUPPORTED
    header, fields, *_ = negotiate(conn, [wire.SMB302], message_id=1)
    assert header.status == wire.STATUS_SUCCESS and fields["dialect"] == wire.SMB302


def test_an_smb1_negotiate_after_smb2_drops_the_connection(conn):
    negotiate(conn, [wire.SMB302])
    with pytest.raises(ConnectionError):
        conn.handle_frame(smb1_negotiate_message())


def test_smb1_negotiate_with_the_wildcard_then_smb2_negotiate(conn):
    [response] = sent(conn.handle_frame(smb1_negotiate_message()))
    header, body = response
    fields = response_fields(body)
    assert header.command == wire.NEGOTIATE and header.flags & wire.FLAGS_SERVER_TO_REDIR
    assert fields["dialect"] == wire.WILDCARD_DIALECT
    assert conn.dialect == 0                     # an SMB2 NEGOTIATE follows
    # which counted as MessageId 0: the SMB2 NEGOTIATE comes with MessageId 1
    header, fields, *_ = negotiate(conn, [wire.SMB311, wire.SMB302], message_id=1)
    assert header.status == wire.STATUS_SUCCESS and conn.dialect == wire.SMB311


def test_smb1_negotiate_with_the_wildcard_then_smb2_negotiate_starting_again_at_0(conn):
    conn.handle_frame(smb1_negotiate_message())
    header, *_ = negotiate(conn, [wire.SMB302], message_id=0)
    assert header.status == wire.STATUS_SUCCESS and conn.dialect == wire.SMB302


def test_smb1_negotiate_offering_2002_alone_settles_on_2002(conn):
    [(header, body)] = sent(conn.handle_frame(smb1_negotiate_message((b"NT LM 0.12", b"SMB 2.002"))))
    fields = response_fields(body)
    assert fields["dialect"] == conn.dialect == wire.SMB202
    assert fields["sizes"] == (65536, 65536, 65536)
    with pytest.raises(ConnectionError):         # negotiated already
        conn.handle_frame(negotiate_request([wire.SMB202], message_id=1))


@pytest.mark.parametrize("dialects", [(b"NT LM 0.12",), (b"NT LM 0.12", b"SMB 2.001")])
def test_smb1_negotiate_without_smb2_drops_the_connection(conn, dialects):
    with pytest.raises(ConnectionError):
        conn.handle_frame(smb1_negotiate_message(dialects))


def test_a_second_smb1_negotiate_drops_the_connection(conn):
    conn.handle_frame(smb1_negotiate_message())
    with pytest.raises(ConnectionError):
        conn.handle_frame(smb1_negotiate_message())
