"""NTLM (inside SPNEGO) as an acceptor, through pyspnego, against smbring's password file.

pyspnego's acceptor looks credentials up by user *and domain* in the file named by
``NTLM_USER_FILE``; SMB clients send whatever workgroup they are configured with, and a
standalone server's users belong to no domain. So the lookup is replaced by one that matches
the user name alone (case-insensitive) in our password file, which stores NT hashes only.

pyspnego also verifies an NTLMv2 response by re-encoding the client's blob from its parsed
fields; Samba's client sends a blob that does not survive that round trip byte for byte, so
every smbclient logon failed. The proof is therefore checked over the blob exactly as received
(MS-NLMP 3.3.2: NTProofStr = HMAC_MD5(NTOWFv2, ServerChallenge + blob)).
"""
from __future__ import annotations

import hashlib
import hmac
import os

import spnego
from spnego import _ntlm
from spnego._ntlm_raw.messages import NTClientChallengeV2
from spnego.exceptions import OperationNotAvailableError

from smbring.server.users import PasswordDB

_ZERO = b"\0" * 16


def _lookup(store, domain, username):
    db = PasswordDB(store).load()
    nt_hash = db.nt_hash(username or "")
    if nt_hash is None:
        raise OperationNotAvailableError(context_msg=f"unknown user {username!r}")
    return domain or "", username, _ZERO, nt_hash


_ntlm._get_credential = _lookup
# our lookup reads the file itself: one that does not exist yet holds no users (guests only)
_ntlm._get_credential_file = lambda: os.environ.get("NTLM_USER_FILE") or None

_received_blob: list[bytes] = []
_unpack = NTClientChallengeV2.unpack  # a staticmethod
_compute_v2 = _ntlm.compute_response_v2


def _unpack_keeping_raw(b_data):
    _received_blob[:] = [bytes(b_data)]
    return _unpack(b_data)


def _compute_v2_over_raw_blob(nt_hash, server_challenge, client_challenge, time, av_pairs):
    if not _received_blob:
        return _compute_v2(nt_hash, server_challenge, client_challenge, time, av_pairs)
    blob = _received_blob.pop()
    proof = hmac.new(nt_hash, server_challenge + blob, hashlib.md5).digest()
    lm = hmac.new(nt_hash, server_challenge + client_challenge, hashlib.md5).digest() + client_challenge
    return proof + blob, lm, hmac.new(nt_hash, proof, hashlib.md5).digest()


NTClientChallengeV2.unpack = staticmethod(_unpack_keeping_raw)
_ntlm.compute_response_v2 = _compute_v2_over_raw_blob


def acceptor(passdb_path: str):
    """A new SPNEGO/NTLM acceptor context checking against passdb_path."""
    os.environ["NTLM_USER_FILE"] = passdb_path
    return spnego.server(protocol="negotiate")


def guest_kind(token: bytes, passdb_path: str) -> str | None:
    """For an NTLM AUTHENTICATE that failed: "anonymous" for a null logon (no user, no
    response), "guest" for a user the password file does not know (Samba's "map to guest =
    bad user"); None for a known user with a wrong password, which stays a failure."""
    at = bytes(token).find(b"NTLMSSP\0")
    if at < 0:
        return None
    msg = bytes(token)[at:]
    if len(msg) < 44 or int.from_bytes(msg[8:12], "little") != 3:
        return None

    def field(offset: int) -> bytes:
        length = int.from_bytes(msg[offset:offset + 2], "little")
        start = int.from_bytes(msg[offset + 4:offset + 8], "little")
        return msg[start:start + length]

    user = field(36).decode("utf-16-le", "replace")
    if not user and len(field(20)) == 0:
        return "anonymous"
    if user and PasswordDB(passdb_path).load().nt_hash(user) is None:
        return "guest"
    return None
