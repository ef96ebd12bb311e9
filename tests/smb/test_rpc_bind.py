"""The DCE/RPC association of a named pipe (sans-I/O, smb.rpc.endpoint): BIND and
ALTER_CONTEXT as Samba answers them, built and read with impacket's structures."""
import struct

import pytest
from rpc_client import (
    BIND_TIME_FEATURES,
    NDR,
    NDR64,
    SRVSVC,
    UNKNOWN_INTERFACE,
    WKSSVC,
    ack_results,
    bind_pdu,
    fault_status,
    ptype,
    request_pdu,
    rpcrt,
    server_get_info,
    split_pdus,
)

from smbring.smb.rpc import pdu, srvsvc, wkssvc
from smbring.smb.rpc.endpoint import TRANSPORT_MAX_FRAG, Endpoint
from smbring.smb.rpc.services import Caller, ServerInfo
from smbring.smb.state import Share

ACCEPTANCE, PROVIDER_REJECTION, NEGOTIATE_ACK = 0, 2, 3
ABSTRACT_SYNTAX_NOT_SUPPORTED, TRANSFER_SYNTAXES_NOT_SUPPORTED = 1, 2
NO_SYNTAX = b"\0" * 20
ACCEPTED = (ACCEPTANCE, 0, NDR)
NOT_NDR = (PROVIDER_REJECTION, TRANSFER_SYNTAXES_NOT_SUPPORTED, NO_SYNTAX)
UNKNOWN = (PROVIDER_REJECTION, ABSTRACT_SYNTAX_NOT_SUPPORTED, NO_SYNTAX)


def endpoint(interface=srvsvc.INTERFACE, **caller) -> Endpoint:
    shares = (Share("data", "/srv/data", comment="Data"),)
    return Endpoint(interface, Caller(shares, ServerInfo(name="HOST"), **caller), assoc_group=0x5A5A)


def exchange(ep: Endpoint, data: bytes) -> list[bytes]:
    """The PDUs the association answers to what the client wrote."""
    ep.write(data)
    return split_pdus(ep.read(1 << 20))


def test_a_bind_of_the_pipes_interface_with_ndr_is_accepted():
    ep = endpoint()
    [ack] = exchange(ep, bind_pdu())
    assert ptype(ack) == rpcrt.MSRPC_BINDACK
    parsed = rpcrt.MSRPCBindAck(ack)
    assert parsed["call_id"] == 1 and parsed["max_tfrag"] == parsed["max_rfrag"] == TRANSPORT_MAX_FRAG
    assert parsed["assoc_group"] == 0x5A5A                  # a new group: nonzero
    assert parsed["SecondaryAddr"].rstrip("\0") == "\\PIPE\\srvsvc"
    assert ack_results(ack) == [ACCEPTED]


def test_wkssvc_is_bound_on_its_own_pipe_and_srvsvc_is_not():
    assert ack_results(exchange(endpoint(wkssvc.INTERFACE), bind_pdu(((WKSSVC, (NDR,)),)))[0]) == [ACCEPTED]
    assert ack_results(exchange(endpoint(wkssvc.INTERFACE), bind_pdu())[0]) == [UNKNOWN]


def test_windows_style_bind_ndr_accepted_ndr64_refused_features_acknowledged():
    """Windows proposes the interface with NDR, with NDR64, and a bind time feature
    negotiation: as Samba, NDR is accepted, NDR64 refused, the negotiation acknowledged
    with no features."""
    proposed = ((SRVSVC, (NDR,)), (SRVSVC, (NDR64,)), (SRVSVC, (BIND_TIME_FEATURES,)))
    [ack] = exchange(endpoint(), bind_pdu(proposed))
    assert ack_results(ack) == [ACCEPTED, NOT_NDR, (NEGOTIATE_ACK, 0, NO_SYNTAX)]


def test_only_one_context_is_accepted_per_bind_and_ndr_is_found_among_several():
    proposed = ((SRVSVC, (NDR64, NDR)), (SRVSVC, (NDR,)), (UNKNOWN_INTERFACE, (NDR,)))
    [ack] = exchange(endpoint(), bind_pdu(proposed))
    assert ack_results(ack) == [ACCEPTED, NOT_NDR, UNKNOWN]


def test_a_refused_context_cannot_carry_calls():
    ep = endpoint()
    exchange(ep, bind_pdu(((SRVSVC, (NDR64,)),)))
    [fault] = exchange(ep, request_pdu(21, server_get_info(101)))
    assert fault_status(fault) == pdu.NCA_S_UNKNOWN_IF and fault[3] & pdu.PFC_DID_NOT_EXECUTE
    assert not ep.disconnected


@pytest.mark.parametrize("asked, granted", [
    ((4280, 4280), 4280), ((5840, 5840), 4280), ((65535, 1024), 2048), ((1024, 1024), 2048),
    ((3001, 4000), 3000), ((4096, 2050), 2048),
])
def test_the_fragment_size_is_negotiated_as_samba_does(asked, granted):
    [ack] = exchange(endpoint(), bind_pdu(max_xmit=asked[0], max_recv=asked[1]))
    parsed = rpcrt.MSRPCBindAck(ack)
    assert parsed["max_tfrag"] == parsed["max_rfrag"] == granted


def test_an_association_group_asked_for_is_granted():
    assert rpcrt.MSRPCBindAck(exchange(endpoint(), bind_pdu(assoc_group=0x1234))[0])["assoc_group"] == 0x1234


def nak_reason(pdu_bytes: bytes) -> int:
    assert ptype(pdu_bytes) == rpcrt.MSRPC_BINDNAK
    return struct.unpack_from("<H", pdu_bytes, 16)[0]


def test_a_second_bind_is_refused_and_ends_the_association():
    ep = endpoint()
    exchange(ep, bind_pdu())
    [nak] = exchange(ep, bind_pdu(call_id=2))
    assert nak_reason(nak) == pdu.NAK_NOT_SPECIFIED
    assert ep.disconnected
    assert exchange(ep, request_pdu(21, server_get_info(100))) == []      # nothing more is answered


def test_a_request_before_any_bind_is_refused():
    ep = endpoint()
    [nak] = exchange(ep, request_pdu(21, server_get_info(100)))
    assert nak_reason(nak) == pdu.NAK_PROTOCOL_VERSION_NOT_SUPPORTED and ep.disconnected


@pytest.mark.parametrize("contexts", [(), ((SRVSVC, ()),)])
def test_a_bind_without_contexts_or_transfer_syntaxes_is_refused(contexts):
    ep = endpoint()
    [nak] = exchange(ep, bind_pdu(contexts))
    assert nak_reason(nak) == pdu.NAK_NOT_SPECIFIED and ep.disconnected


def test_an_authenticated_bind_is_refused():
    """Only auth level none is offered: the SMB session is the caller's identity."""
    bind = bytearray(bind_pdu())
    verifier = struct.pack("<BBBBI", 10, 2, 0, 0, 0) + b"NTLMSSP\0" + b"\0" * 8     # type 10: NTLMSSP
    bind += verifier
    struct.pack_into("<HH", bind, 8, len(bind), len(verifier) - 8)
    ep = endpoint()
    [nak] = exchange(ep, bytes(bind))
    assert nak_reason(nak) == pdu.NAK_AUTHENTICATION_TYPE_NOT_RECOGNIZED and ep.disconnected


@pytest.mark.parametrize("change", [(0, 4), (1, 2), (4, 0x00)])   # version 4, minor 2, big-endian
def test_another_protocol_version_or_big_endian_data_is_refused(change):
    bind = bytearray(bind_pdu())
    bind[change[0]] = change[1]
    ep = endpoint()
    [nak] = exchange(ep, bytes(bind))
    assert nak_reason(nak) == pdu.NAK_PROTOCOL_VERSION_NOT_SUPPORTED and ep.disconnected


def test_alter_context_adds_a_context_and_refuses_others():
    ep = endpoint()
    exchange(ep, bind_pdu())
    alter = bind_pdu(((SRVSVC, (NDR,)), (SRVSVC, (NDR,)), (UNKNOWN_INTERFACE, (NDR,))), call_id=2,
                     ptype=rpcrt.MSRPC_ALTERCTX)
    [resp] = exchange(ep, alter)
    assert ptype(resp) == rpcrt.MSRPC_ALTERCTX_R
    # context 0 is the one already accepted: accepted again; context 1 would be a second new one
    assert ack_results(resp) == [ACCEPTED, NOT_NDR, UNKNOWN]
    assert not ep.disconnected


def test_alter_context_can_bring_the_first_accepted_context():
    ep = endpoint()
    exchange(ep, bind_pdu(((SRVSVC, (NDR64,)),)))
    [resp] = exchange(ep, bind_pdu(((SRVSVC, (NDR,)),), call_id=2, ptype=rpcrt.MSRPC_ALTERCTX))
    assert ack_results(resp) == [ACCEPTED]
    [answer] = exchange(ep, request_pdu(21, server_get_info(100), call_id=3))
    assert ptype(answer) == rpcrt.MSRPC_RESPONSE


@pytest.mark.parametrize("kind", [pdu.CO_CANCEL, pdu.ORPHANED])
def test_cancel_and_orphaned_are_ignored(kind):
    ep = endpoint()
    exchange(ep, bind_pdu())
    assert exchange(ep, pdu.header(kind, 3, 16, 5)) == []
    assert not ep.disconnected


@pytest.mark.parametrize("kind", [pdu.RESPONSE, pdu.FAULT, pdu.BIND_ACK, pdu.AUTH3, pdu.SHUTDOWN, 99])
def test_other_pdu_types_after_the_bind_end_the_association(kind):
    ep = endpoint()
    exchange(ep, bind_pdu())
    [fault] = exchange(ep, pdu.header(kind, 3, 24, 5) + b"\0" * 8)
    assert fault_status(fault) == pdu.NCA_S_PROTO_ERROR and ep.disconnected


def test_alter_context_without_contexts_faults_and_ends_the_association():
    ep = endpoint()
    exchange(ep, bind_pdu(assoc_group=0x77))
    [fault] = exchange(ep, bind_pdu((), call_id=2, ptype=rpcrt.MSRPC_ALTERCTX))
    assert fault_status(fault) == pdu.NCA_S_PROTO_ERROR and ep.disconnected


def test_alter_context_answers_with_the_bound_association_group():
    ep = endpoint()
    exchange(ep, bind_pdu(assoc_group=0x77))
    [resp] = exchange(ep, bind_pdu(call_id=2, ptype=rpcrt.MSRPC_ALTERCTX, assoc_group=0))
    assert struct.unpack_from("<I", resp, 20)[0] == 0x77
