"""One named pipe's DCE/RPC association (connection-oriented, MS-RPCE 3.3), sans-I/O: what
the client writes to the pipe goes in (`write`), what it is to read comes out (`read`), as the
byte stream Samba's pipes carry.

The association follows Samba's RPC server: the first PDU must be a BIND, which negotiates the
fragment size (at most 4280 bytes on a pipe) and accepts one presentation context of the pipe's
interface with the NDR transfer syntax (others are rejected in the BIND_ACK's result list, a
bind time feature negotiation acknowledged with no features); a second BIND is refused.
Requests are reassembled from their fragments, run, and answered with RESPONSE fragments of at
most the negotiated size, or with a FAULT. Authentication is not offered (auth level none: the
pipe's SMB session is the caller's identity, as for srvsvc on Samba).

Bounds: a request's fragments together at most MAX_REQUEST bytes, a request fragment at most
the negotiated size (Samba: the transport's 4280), a BIND at most 65535 (its length field); a
client that does not read its answers may leave at most MAX_PENDING_OUTPUT bytes unread before
a further PDU is taken; one write brings at most MAX_INPUT bytes. Breaking one ends the association after a FAULT (or BIND_NAK), as Samba
drops it: the pipe then answers STATUS_PIPE_DISCONNECTED."""
from __future__ import annotations

import logging
import struct
from typing import Callable

from smbring.smb.rpc import pdu
from smbring.smb.rpc.ndr import NdrError
from smbring.smb.rpc.services import Caller, Interface, Later

log = logging.getLogger("smbring.rpc")

TRANSPORT_MAX_FRAG = 4280        # Samba's TSTREAM_SMBXCLI_NP_MAX_BUF_SIZE
MIN_FRAG = 2048                  # the least a BIND may negotiate (as Samba and Windows)
MAX_REQUEST = 64 * 1024          # a request's stub data, all fragments together
MAX_PENDING_OUTPUT = 64 * 1024   # answers written but not read, before another PDU is taken
# bytes one WRITE (or transceive) may bring, with what an earlier one left: two of the largest
# PDUs (a BIND's 16-bit length). Clients write a fragment at a time; eight MiB of 16-byte PDUs
# in one WRITE stalled the event loop, for every client, for over a second.
MAX_INPUT = 2 * 65536


class Endpoint:
    def __init__(self, interface: Interface, caller: Caller, assoc_group: int):
        self.interface = interface
        self.caller = caller
        self.assoc_group = assoc_group     # offered when the client asks for a new group
        self.max_frag = TRANSPORT_MAX_FRAG
        self.bound = False                 # a BIND was answered (accepted or not)
        self.context_ids: set[int] = set()  # presentation contexts accepted
        self._accepted_now = False         # a new context was accepted by the PDU at hand
        self.disconnected = False
        self._input = bytearray()          # at most one PDU not yet whole
        self._output = bytearray()         # whole PDUs, one after another
        self._fragment_left = 0            # bytes of the first PDU in _output a READ left
        self._call: tuple[int, int, int, bytearray] | None = None   # (call id, context, opnum, stub)
        self._later = False                # a call's answer comes later (services.Later)
        # called once an answer that came later is there to read (the pipe's waiting READs)
        self.on_output: Callable[[], None] | None = None

    # -- the pipe's two directions ---------------------------------------------------------
    def write(self, data) -> None:
        """Bytes the client wrote: every whole PDU among them is handled at once."""
        if self.disconnected:
            return
        if len(self._input) + len(data) > MAX_INPUT:
            self._disconnect_with(pdu.fault(0, 0, pdu.NCA_S_PROTO_ERROR),
                                  f"a write of {len(data)} bytes (at most {MAX_INPUT} at once)")
            self._input.clear()
            return
        self._input += data
        pos = 0
        while len(self._input) - pos >= pdu.HEADER_SIZE and not self.disconnected and not self._later:
            frag_length = struct.unpack_from("<H", self._input, pos + 8)[0]
            if frag_length < pdu.HEADER_SIZE:
                self._disconnect_with(pdu.fault(0, 0, pdu.NCA_S_PROTO_ERROR), "fragment length below a header")
                break
            if len(self._input) - pos < frag_length:
                break
            if len(self._output) > MAX_PENDING_OUTPUT:
                self._disconnect_with(b"", "the client does not read its answers")
                break
            self._handle(bytes(self._input[pos:pos + frag_length]))
            pos += frag_length
        del self._input[:pos]
        if self.disconnected:
            self._input.clear()

    def pending(self) -> int:
        """Bytes the client may read now."""
        return len(self._output)

    def read(self, limit: int) -> bytes:
        """At most `limit` bytes, and never past the end of a PDU: a named pipe is read one
        message at a time, as Samba's are (clients such as impacket read one fragment per
        READ and would take the next fragment's start for the end of this one)."""
        if not self._fragment_left and len(self._output) >= 10:
            self._fragment_left = struct.unpack_from("<H", self._output, 8)[0]
        n = min(limit, self._fragment_left or len(self._output))
        data = bytes(self._output[:n])
        del self._output[:n]
        self._fragment_left = max(0, self._fragment_left - n)
        return data

    def message_unread(self) -> bool:
        """The PDU the last read began is not read to its end (a READ shorter than it)."""
        return self._fragment_left > 0

    # -- PDUs ------------------------------------------------------------------------------
    def _handle(self, packet: bytes) -> None:
        try:
            hdr = pdu.Header.parse(packet)
            if hdr.version != 5 or hdr.minor > 1 or hdr.drep[0] & 0xF0 != 0x10:
                # another protocol version, or big-endian data: not spoken here
                if not self.bound:
                    self.bound = True
                    self._disconnect_with(pdu.bind_nak(hdr.call_id, pdu.NAK_PROTOCOL_VERSION_NOT_SUPPORTED),
                                          "unsupported version or data representation")
                else:
                    self._disconnect_with(pdu.fault(hdr.call_id, 0, pdu.NCA_S_PROTO_ERROR),
                                          "unsupported version or data representation")
                return
            if not self.bound:
                self.bound = True           # only one BIND per association, as in Samba
                self._bind(hdr, packet)
            elif hdr.ptype == pdu.REQUEST:
                self._request(hdr, packet)
            elif hdr.ptype == pdu.ALTER_CONTEXT:
                self._alter_context(hdr, packet)
            elif hdr.ptype == pdu.BIND:
                self._disconnect_with(pdu.bind_nak(hdr.call_id, pdu.NAK_NOT_SPECIFIED), "a second BIND")
            elif hdr.ptype in (pdu.CO_CANCEL, pdu.ORPHANED):
                pass                        # every call is answered at once: nothing to cancel
            else:
                self._disconnect_with(pdu.fault(hdr.call_id, 0, pdu.NCA_S_PROTO_ERROR),
                                      f"unexpected PDU type {hdr.ptype}")
        except (pdu.PduError, struct.error) as e:
            self._disconnect_with(pdu.fault(0, 0, pdu.NCA_S_PROTO_ERROR), f"malformed PDU: {e}")

    def _disconnect_with(self, answer: bytes, why: str) -> None:
        log.info("%s pipe: association ended: %s", self.interface.pipe, why)
        self._output += answer
        self.disconnected = True
        self._call = None

    def _negotiate(self, hdr: pdu.Header, packet) -> tuple[pdu.Bind, list] | None:
        """The results for a BIND's or ALTER_CONTEXT's contexts (accepting at most one new one,
        as Samba), or None when the PDU itself is refused (a BIND with a BIND_NAK, an
        ALTER_CONTEXT with a FAULT, as Samba; the association ends)."""
        bind = pdu.parse_bind(packet)
        if hdr.auth_length:
            why, reason = "an authenticated bind (only auth level none is offered)", \
                pdu.NAK_AUTHENTICATION_TYPE_NOT_RECOGNIZED
        elif not bind.contexts or any(not c.transfers for c in bind.contexts):
            why, reason = "no presentation context", pdu.NAK_NOT_SPECIFIED
        else:
            return bind, [self._result(c) for c in bind.contexts]
        self._disconnect_with(pdu.bind_nak(hdr.call_id, reason) if hdr.ptype == pdu.BIND else
                              pdu.fault(hdr.call_id, 0, pdu.NCA_S_PROTO_ERROR), why)
        return None

    def _result(self, c: pdu.Context) -> tuple[int, int, pdu.Syntax]:
        """A proposed context's result: the interface's with NDR is accepted once per PDU (a
        context id already accepted is accepted again), a bind time feature negotiation is
        acknowledged with no features."""
        if c.transfers[0].uuid[:8] == pdu.BIND_TIME_FEATURES and c.transfers[0].version == 1:
            return pdu.NEGOTIATE_ACK, 0, pdu.NO_SYNTAX
        if c.abstract != self.interface.syntax:
            return pdu.PROVIDER_REJECTION, pdu.REASON_ABSTRACT_SYNTAX_NOT_SUPPORTED, pdu.NO_SYNTAX
        if pdu.NDR not in c.transfers or (self._accepted_now and c.context_id not in self.context_ids):
            return pdu.PROVIDER_REJECTION, pdu.REASON_TRANSFER_SYNTAXES_NOT_SUPPORTED, pdu.NO_SYNTAX
        self._accepted_now = True
        self.context_ids.add(c.context_id)
        return pdu.ACCEPTANCE, 0, pdu.NDR

    def _bind(self, hdr: pdu.Header, packet) -> None:
        if hdr.ptype != pdu.BIND:
            self._disconnect_with(pdu.bind_nak(hdr.call_id, pdu.NAK_PROTOCOL_VERSION_NOT_SUPPORTED),
                                  f"PDU type {hdr.ptype} before BIND")
            return
        self._accepted_now = False
        negotiated = self._negotiate(hdr, packet)
        if negotiated is None:
            return
        bind, results = negotiated
        # as Samba: the smaller of the client's two sizes, at least 2048, at most the
        # transport's, on an 8-byte boundary; the same both ways
        self.max_frag = min(max(MIN_FRAG, min(bind.max_xmit_frag, bind.max_recv_frag)), TRANSPORT_MAX_FRAG) & ~7
        # an association group asked for by id is granted as asked: nothing here is shared
        # between the pipes of a group (each pipe's context handles are its own), so there is
        # nothing to check
        self.assoc_group = bind.assoc_group or self.assoc_group
        self._output += pdu.bind_ack(pdu.BIND_ACK, hdr.call_id, self.max_frag, self.assoc_group,
                                     f"\\PIPE\\{self.interface.pipe}", results)

    def _alter_context(self, hdr: pdu.Header, packet) -> None:
        self._accepted_now = False
        negotiated = self._negotiate(hdr, packet)
        if negotiated is not None:
            self._output += pdu.bind_ack(pdu.ALTER_CONTEXT_RESP, hdr.call_id, self.max_frag, self.assoc_group,
                                         "", negotiated[1])

    def _request(self, hdr: pdu.Header, packet) -> None:
        if hdr.frag_length > self.max_frag:
            self._disconnect_with(pdu.fault(hdr.call_id, 0, pdu.NCA_S_PROTO_ERROR),
                                  f"a request fragment of {hdr.frag_length} bytes (at most {self.max_frag})")
            return
        req = pdu.parse_request(hdr, packet)
        if hdr.flags & pdu.PFC_FIRST_FRAG:
            if self._call is not None:
                self._disconnect_with(pdu.fault(self._call[0], self._call[1], pdu.NCA_S_PROTO_ERROR),
                                      "a new request while another's fragments arrive")
                return
            if req.context_id not in self.context_ids:
                self._output += pdu.fault(hdr.call_id, req.context_id, pdu.NCA_S_UNKNOWN_IF,
                                          pdu.PFC_DID_NOT_EXECUTE)
                return
            if req.alloc_hint > MAX_REQUEST:
                self._disconnect_with(pdu.fault(hdr.call_id, req.context_id, pdu.FAULT_ACCESS_DENIED),
                                      f"a request announcing {req.alloc_hint} bytes")
                return
            self._call = (hdr.call_id, req.context_id, req.opnum, bytearray())
        elif self._call is None or self._call[0] != hdr.call_id:
            self._disconnect_with(pdu.fault(hdr.call_id, req.context_id, pdu.NCA_S_PROTO_ERROR),
                                  "a request's later fragment without its first")
            return
        call_id, context_id, opnum, stub = self._call
        if len(stub) + len(req.stub) > MAX_REQUEST:
            self._disconnect_with(pdu.fault(call_id, context_id, pdu.FAULT_ACCESS_DENIED),
                                  f"a request of more than {MAX_REQUEST} bytes")
            return
        stub += req.stub
        if not hdr.flags & pdu.PFC_LAST_FRAG:
            return
        self._call = None
        self._run(call_id, context_id, opnum, bytes(stub))

    def _run(self, call_id: int, context_id: int, opnum: int, stub: bytes) -> None:
        operation = self.interface.operations.get(opnum)
        if operation is None:
            self._output += pdu.fault(call_id, context_id, pdu.NCA_S_OP_RNG_ERROR, pdu.PFC_DID_NOT_EXECUTE)
            return
        try:
            result = operation(self.caller, stub)
        except NdrError as e:
            log.info("%s pipe: opnum %d: unreadable stub data: %s", self.interface.pipe, opnum, e)
            self._output += pdu.fault(call_id, context_id, pdu.FAULT_NDR, pdu.PFC_DID_NOT_EXECUTE)
            return
        if isinstance(result, Later):
            self._later = True
            result.start(lambda stub_data: self._answered(call_id, context_id, stub_data))
            return
        for fragment in pdu.responses(call_id, context_id, result, self.max_frag):
            self._output += fragment

    def _answered(self, call_id: int, context_id: int, result: bytes) -> None:
        """A call's answer that came later: queued, then the PDUs that waited behind it are
        taken, and the pipe is told there is something to read."""
        if not self._later:
            return          # (called twice, or the association ended meanwhile)
        self._later = False
        if self.disconnected:
            return
        for fragment in pdu.responses(call_id, context_id, result, self.max_frag):
            self._output += fragment
        self.write(b"")
        if self.on_output is not None:
            self.on_output()
