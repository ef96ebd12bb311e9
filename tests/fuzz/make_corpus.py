"""Writes the seed corpus (tests/fuzz/corpus/seed-*): valid requests the fuzzer starts from.

    .venv/bin/python tests/fuzz/make_corpus.py [--check]

One seed per command with a valid body, and the stories around them: a compound, signed and
sealed requests, a LOCK with many elements, a CREATE with contexts, a directory listing with
each class, SET_INFO with each class, FSCTL_VALIDATE_NEGOTIATE_INFO, a waiting request
cancelled, raw frames, and generated messages. With --check, each seed is run through the
harness's checks and the status of every answer printed. Inputs the fuzzer added (merged
in by -merge=1, named by their SHA-1) are left alone.
"""
from __future__ import annotations

import os
import random
import struct
import sys

import smbfuzz_input as fi
from smbfuzz_input import Spec, encode_compound, encode_gen, encode_mode, encode_msg, encode_raw
from smbring.smb import acl, wire
from smbring.smb.wire import Header

CORPUS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
SMB202, SMB300, SMB302, SMB311, FRESH = 0, 2, 3, 4, fi.Mode.FRESH
ANY = fi.FID_ANY_SLOT       # in a related compound: the previous request's file
NEWEST = 2                  # the FileId of the latest CREATE answer
RELATED = 0x01


# -- request bodies (MS-SMB2 2.2), the fields a client fills in ---------------------------------

def create(name: str, access=wire.GENERIC_READ | wire.GENERIC_WRITE, disposition=wire.FILE_OPEN_IF,
           options=0, share=7, attrs=0, contexts: list[tuple[bytes, bytes]] = (), oplock=0) -> bytes:
    n = wire.utf16(name)
    ctx = fi.context_chain(list(contexts))
    ctx_off = wire.pad8(120 + len(n)) if ctx else 0
    body = struct.pack("<HBBIQQIIIIIHHII", 57, 0, oplock, 2, 0, 0, access, attrs, share, disposition, options,
                       120, len(n), ctx_off, len(ctx)) + n
    return body + b"\0" * (ctx_off - 64 - len(body)) + ctx if ctx else body


def close(flags=1) -> bytes:
    return struct.pack("<HHI16s", 24, flags, 0, b"\0" * 16)


def read(length=100, offset=0) -> bytes:
    return struct.pack("<HBBIQ16sIIIHH", 49, 0x50, 0, length, offset, b"\0" * 16, 0, 0, 0, 0, 0) + b"\0"


def write(data: bytes, offset=0, flags=0) -> bytes:
    return struct.pack("<HHIQ16sIIHHI", 49, 112, len(data), offset, b"\0" * 16, 0, 0, 0, 0, flags) + data


def flush() -> bytes:
    return struct.pack("<HHI16s", 24, 0, 0, b"\0" * 16)


def lock(elements: list[tuple[int, int, int]]) -> bytes:
    return struct.pack("<HHI16s", 48, len(elements), 0, b"\0" * 16) + \
        b"".join(struct.pack("<QQII", o, n, f, 0) for o, n, f in elements)


def ioctl(ctl: int, data: bytes = b"", max_out=65536) -> bytes:
    return struct.pack("<HHI16sIIIIIIII", 57, 0, ctl, b"\xff" * 16, 120 if data else 0, len(data), 0, 0, 0,
                       max_out, 1, 0) + data


def query_directory(klass=37, pattern="*", flags=0, out_len=65536) -> bytes:
    p = wire.utf16(pattern)
    return struct.pack("<HBBI16sHHI", 33, klass, flags, 0, b"\0" * 16, 96, len(p), out_len) + p


def change_notify(out_len=4096, flags=1, completion_filter=0x17F) -> bytes:
    return struct.pack("<HHI16sII", 32, flags, out_len, b"\0" * 16, completion_filter, 0)


def query_info(info_type=1, klass=18, out_len=4096, additional=0) -> bytes:
    return struct.pack("<HBBIHHIII16s", 41, info_type, klass, out_len, 0, 0, 0, additional, 0, b"\0" * 16)


def set_info(info_type: int, klass: int, data: bytes, additional=0) -> bytes:
    return struct.pack("<HBBIHHI16s", 33, info_type, klass, len(data), 96, 0, additional, b"\0" * 16) + data


def simple() -> bytes:
    return struct.pack("<HH", 4, 0)


def tree_connect(path: str) -> bytes:
    p = wire.utf16(path)
    return struct.pack("<HHHH", 9, 0, 72, len(p)) + p


def negotiate(dialects=(0x0202, 0x0210, 0x0300, 0x0302, 0x0311), contexts=True) -> bytes:
    ctx = [struct.pack("<HHIHH", wire.PREAUTH_INTEGRITY_CAPABILITIES, 38, 0, 1, 32) +
           struct.pack("<H", wire.SHA512) + b"\x5a" * 32,
           struct.pack("<HHIHHHHH", wire.ENCRYPTION_CAPABILITIES, 10, 0, 4, 2, 1, 4, 3),
           struct.pack("<HHIHHHH", wire.SIGNING_CAPABILITIES, 8, 0, 3, 2, 1, 0)] if contexts else []
    ctx_off = wire.pad8(64 + 36 + 2 * len(dialects)) if ctx else 0
    body = struct.pack("<HHHHI16sIHH", 36, len(dialects), 1, 0, 0x7F, b"\x11" * 16, ctx_off, len(ctx), 0) + \
        struct.pack(f"<{len(dialects)}H", *dialects)
    if ctx:
        body += b"\0" * (ctx_off - 64 - len(body))
        body += b"".join(c + b"\0" * (wire.pad8(len(c)) - len(c)) for c in ctx)
    return body


def session_setup(token: bytes) -> bytes:
    return struct.pack("<HBBIIHHQ", 25, 0, 1, 1, 0, 88, len(token), 0) + token


def vni_body() -> bytes:
    """FSCTL_VALIDATE_NEGOTIATE_INFO as the client of a 3.0.2 set-up sends it: what its
    NEGOTIATE offered (smbfuzz_client.negotiate_body)."""
    return struct.pack("<I16sHHH", wire.CAP_ENCRYPTION, b"\x11" * 16, wire.SECURITY_SIGNING_ENABLED, 1, wire.SMB302)


def security_descriptor() -> bytes:
    return acl.Descriptor(control=acl.SE_SELF_RELATIVE | acl.SE_DACL_PRESENT, owner=acl.OWNER_SID,
                          group=acl.GROUP_SID,
                          dacl=[acl.Ace(acl.ALLOWED, acl.OBJECT_INHERIT | acl.CONTAINER_INHERIT,
                                        wire.FILE_ALL_ACCESS, acl.EVERYONE),
                                acl.Ace(acl.DENIED, 0, wire.DELETE, acl.AUTHENTICATED_USERS)]).pack()


def ea(name: bytes, value: bytes) -> bytes:
    return struct.pack("<IBBH", 0, 0, len(name), len(value)) + name + b"\0" + value


# -- seeds --------------------------------------------------------------------------------------

def msg(command: int, body: bytes, **spec) -> bytes:
    return encode_msg(Spec(command, **spec), body)


def opened(name="f.txt", **kw) -> bytes:
    """A CREATE whose FileId the next requests use (fid=NEWEST)."""
    return msg(wire.CREATE, create(name, **kw))


def on_file(*requests: tuple[int, bytes], name="f.txt", mode=SMB302, held_writes=False,
            strict_allocate=False, **kw) -> bytes:
    """Open `name`, send each request on it, close it."""
    return encode_mode(mode, held_writes, strict_allocate=strict_allocate) + opened(name, **kw) + \
        b"".join(msg(cmd, body, fid=NEWEST) for cmd, body in requests) + msg(wire.CLOSE, close(), fid=NEWEST)


def raw_frame(command: int, body: bytes, session_id=1, tree_id=0, mid=3, flags=0, next_command=0) -> bytes:
    return Header(command=command, session_id=session_id, tree_id=tree_id, message_id=mid, credits=32,
                  flags=flags, next_command=next_command).pack() + body


def raw_compound(parts: list[tuple[int, bytes, int]]) -> bytes:
    """A compound with the ids the deterministic set-up hands out (user session 1, its
    writable share tree 2), every request after the first related."""
    out = b""
    for i, (command, body, flags) in enumerate(parts):
        last = i == len(parts) - 1
        size = 64 + len(body)
        padded = size if last else wire.pad8(size)
        out += raw_frame(command, body, tree_id=2, mid=20 + i, flags=flags,
                         next_command=0 if last else padded) + b"\0" * (padded - size)
    return out


def seeds() -> dict[str, bytes]:
    s: dict[str, bytes] = {}
    # logon from scratch: NEGOTIATE, SESSION_SETUP (NTLM, then a bad AUTHENTICATE: a guest)
    s["negotiate"] = encode_mode(FRESH) + msg(wire.NEGOTIATE, negotiate(), session=fi.NO_SESSION)
    s["negotiate-202"] = encode_mode(FRESH) + msg(wire.NEGOTIATE, negotiate((0x0202,), False), session=fi.NO_SESSION)
    s["session-setup"] = encode_mode(FRESH) + msg(wire.NEGOTIATE, negotiate((0x0302,), False), session=fi.NO_SESSION) + \
        msg(wire.SESSION_SETUP, session_setup(fi.SPNEGO_NTLM), session=fi.NO_SESSION) + \
        msg(wire.SESSION_SETUP, session_setup(b"NTLMSSP\0\x03\0\0\0" + b"\0" * 80), session=fi.USER) + \
        msg(wire.TREE_CONNECT, tree_connect("\\\\srv\\ro"), session=fi.USER, tree=fi.TREE_ZERO)
    s["logoff"] = encode_mode(SMB302) + msg(wire.LOGOFF, simple()) + msg(wire.ECHO, simple())
    s["tree-connect"] = encode_mode(SMB302) + msg(wire.TREE_CONNECT, tree_connect("\\\\srv\\rw")) + \
        msg(wire.CREATE, create("dir", options=wire.FILE_DIRECTORY_FILE), tree=fi.TREE_LAST) + \
        msg(wire.TREE_DISCONNECT, simple(), tree=fi.TREE_LAST) + msg(wire.CLOSE, close(), fid=NEWEST)
    s["tree-connect-guest"] = encode_mode(SMB311) + msg(wire.TREE_CONNECT, tree_connect("\\\\srv\\rw"), session=fi.GUEST) + \
        msg(wire.CREATE, create("ro-only.txt"), session=fi.GUEST, tree=fi.TREE_RO)
    s["echo"] = encode_mode(SMB202) + msg(wire.ECHO, simple())
    s["create-close"] = on_file(name="new", disposition=wire.FILE_CREATE)
    s["create-contexts"] = on_file(
        (wire.QUERY_INFO, query_info(1, 15)), name="new-ctx", disposition=wire.FILE_CREATE,
        access=wire.MAXIMUM_ALLOWED,
        contexts=[(b"ExtA", wire.chain([ea(b"user.a", b"1"), ea(b"B", b"two")])), (b"SecD", security_descriptor()),
                  (b"MxAc", b""), (b"QFid", b""), (b"AlSi", struct.pack("<Q", 1 << 20))])
    # a version 2 lease (RWH, parent key set), then a lease break acknowledgement for its key
    lease_key = bytes(range(16))
    s["create-lease"] = on_file(
        (wire.OPLOCK_BREAK, struct.pack("<HHI16sIQ", 36, 0, 0, lease_key, 3, 0)),
        name="leased", oplock=0xFF,
        contexts=[(b"RqLs", struct.pack("<16sIIQ16sHH", lease_key, 7, 4, 0, b"p" * 16, 1, 0))])
    s["create-stream"] = on_file((wire.WRITE, write(b"alt data")), (wire.QUERY_INFO, query_info(1, 22)),
                                 name="s.txt:new:$DATA")
    s["create-delete-on-close"] = on_file(name="dir\\a", access=wire.DELETE | wire.GENERIC_READ,
                                          options=wire.FILE_DELETE_ON_CLOSE | wire.FILE_NON_DIRECTORY_FILE)
    s["create-readonly-share"] = encode_mode(SMB302) + msg(wire.CREATE, create("f.txt", access=wire.GENERIC_WRITE), tree=fi.TREE_RO) + \
        msg(wire.CREATE, create("f.txt", access=wire.GENERIC_READ, disposition=wire.FILE_OPEN), tree=fi.TREE_RO) + \
        msg(wire.READ, read(), fid=NEWEST, tree=fi.TREE_RO)
    s["read"] = on_file((wire.READ, read(4096)), (wire.READ, read(10, 1 << 20)))
    s["write"] = on_file((wire.WRITE, write(b"fuzz" * 64, 100)), (wire.READ, read(400)), held_writes=True)
    s["flush"] = on_file((wire.WRITE, write(b"x", 0, 1)), (wire.FLUSH, flush()), held_writes=True)
    s["lock-many"] = on_file((wire.LOCK, lock([(i * 10, 5, wire.LOCK_EXCLUSIVE | wire.LOCK_FAIL_IMMEDIATELY)
                                              for i in range(60)])),
                             (wire.LOCK, lock([(i * 10, 5, wire.LOCK_UNLOCK) for i in range(60)])))
    s["lock-blocking-cancel"] = encode_mode(SMB302) + opened() + opened() + \
        msg(wire.LOCK, lock([(0, 10, wire.LOCK_EXCLUSIVE | wire.LOCK_FAIL_IMMEDIATELY)]), fid=NEWEST + 1) + \
        msg(wire.LOCK, lock([(0, 10, wire.LOCK_EXCLUSIVE)]), fid=NEWEST) + fi.encode_cancel(1) + \
        msg(wire.LOCK, lock([(0, 10, wire.LOCK_EXCLUSIVE)]), fid=NEWEST) + \
        msg(wire.LOCK, lock([(0, 10, wire.LOCK_UNLOCK)]), fid=NEWEST + 1)
    s["ioctl-validate-negotiate"] = encode_mode(SMB302) + msg(wire.IOCTL, ioctl(0x00140204, vni_body(), 24))
    s["ioctl-interfaces"] = encode_mode(SMB311) + msg(wire.IOCTL, ioctl(0x001401FC))
    s["ioctl-object-id"] = on_file((wire.IOCTL, ioctl(0x000900C0)))
    s["cancel"] = encode_mode(SMB302) + msg(wire.CREATE, create("dir", options=wire.FILE_DIRECTORY_FILE)) + \
        msg(wire.CHANGE_NOTIFY, change_notify(), fid=NEWEST) + msg(wire.CANCEL, simple())
    s["change-notify"] = encode_mode(SMB302) + msg(wire.CREATE, create("dir", options=wire.FILE_DIRECTORY_FILE)) + \
        msg(wire.CHANGE_NOTIFY, change_notify(), fid=NEWEST) + \
        msg(wire.CREATE, create("dir\\born", disposition=wire.FILE_CREATE)) + \
        msg(wire.CHANGE_NOTIFY, change_notify(), fid=NEWEST + 1)
    for klass in (1, 2, 3, 12, 37, 38):
        s[f"query-directory-{klass}"] = on_file((wire.QUERY_DIRECTORY, query_directory(klass)),
                                                (wire.QUERY_DIRECTORY, query_directory(klass, "*", 0x10, 200)),
                                                name="dir", options=wire.FILE_DIRECTORY_FILE)
    s["query-directory-root"] = on_file((wire.QUERY_DIRECTORY, query_directory(3, "<")), name="",
                                        options=wire.FILE_DIRECTORY_FILE)
    for klass in (4, 5, 6, 7, 8, 14, 16, 18, 21, 22, 28, 34, 35, 48):
        s[f"query-info-{klass}"] = on_file((wire.QUERY_INFO, query_info(1, klass)), name="s.txt", mode=SMB311)
    s["query-info-fs"] = on_file(*[(wire.QUERY_INFO, query_info(2, k)) for k in (1, 3, 4, 5, 6, 7, 8, 11)])
    s["query-info-security"] = on_file((wire.QUERY_INFO, query_info(3, 0, 4096, 7)), name="deny.txt",
                                       access=wire.GENERIC_READ | 0x20000)
    basic = struct.pack("<QQQQII", 132000000000000000, 0, 0xFFFFFFFFFFFFFFFF, 0, wire.ATTR_HIDDEN, 0)
    rename = wire.utf16("dir\\renamed")
    set_infos = {
        "basic": set_info(1, 4, basic),
        "rename": set_info(1, 10, struct.pack("<B7sQI", 1, b"\0" * 7, 0, len(rename)) + rename),
        "disposition": set_info(1, 13, b"\x01"),
        "position": set_info(1, 14, struct.pack("<Q", 4096)),
        "full-ea": set_info(1, 15, wire.chain([ea(b"user.x", b"y"), ea(b"gone", b"")])),
        "mode": set_info(1, 16, struct.pack("<I", 2)),
        "allocation": set_info(1, 19, struct.pack("<Q", 65536)),
        "end-of-file": set_info(1, 20, struct.pack("<Q", 10)),
        "security": set_info(3, 0, security_descriptor(), 7),
    }
    for label, body in set_infos.items():
        s[f"set-info-{label}"] = on_file((wire.SET_INFO, body), (wire.QUERY_INFO, query_info(1, 18)),
                                         name="ea.txt", access=wire.GENERIC_ALL, disposition=wire.FILE_OPEN)
    s["set-info-allocation-strict"] = on_file((wire.SET_INFO, set_infos["allocation"]), strict_allocate=True)
    s["create-allocation-strict"] = on_file(name="new-alloc", disposition=wire.FILE_CREATE, strict_allocate=True,
                                            contexts=[(b"AlSi", struct.pack("<Q", 1 << 20))])
    # the share reached encrypted only: unencrypted, then encrypted by the session that must
    s["encrypted-share"] = encode_mode(SMB302) + msg(wire.TREE_CONNECT, tree_connect("\\\\srv\\enc")) + \
        msg(wire.CREATE, create("a", disposition=wire.FILE_OPEN), tree=fi.TREE_LAST) + \
        msg(wire.TREE_CONNECT, tree_connect("\\\\srv\\enc"), session=fi.SEALED_SESSION) + \
        msg(wire.CREATE, create("a", disposition=wire.FILE_OPEN), session=fi.SEALED_SESSION, tree=fi.TREE_LAST) + \
        msg(wire.READ, read(), session=fi.SEALED_SESSION, tree=fi.TREE_LAST, fid=NEWEST) + \
        msg(wire.READ, read(), session=fi.SEALED_PLAIN, tree=fi.TREE_LAST, fid=NEWEST)
    # the writable share's previous version (shadow_copy2): listed, opened by its time (TWrp),
    # read, listed in, written (refused), a new file in it (refused)
    twrp = [(b"TWrp", struct.pack("<Q", fi.SNAPSHOT_FILETIME))]
    s["previous-version"] = on_file(
        (wire.IOCTL, ioctl(0x00144064, max_out=16)), (wire.IOCTL, ioctl(0x00144064)), name="",
        options=wire.FILE_DIRECTORY_FILE, access=wire.GENERIC_READ, disposition=wire.FILE_OPEN) + \
        opened("f.txt", access=wire.GENERIC_READ, disposition=wire.FILE_OPEN, contexts=twrp) + \
        msg(wire.READ, read(), fid=NEWEST) + msg(wire.WRITE, write(b"changed"), fid=NEWEST) + \
        msg(wire.SET_INFO, set_info(1, 4, struct.pack("<QQQQII", 1, 1, 1, 1, 0x20, 0)), fid=NEWEST) + \
        msg(wire.CLOSE, close(), fid=NEWEST) + \
        opened("dir", access=wire.GENERIC_READ, disposition=wire.FILE_OPEN, options=wire.FILE_DIRECTORY_FILE,
               contexts=twrp) + msg(wire.QUERY_DIRECTORY, query_directory(37), fid=NEWEST) + \
        opened("new.txt", disposition=wire.FILE_CREATE, contexts=twrp) + \
        opened("f.txt", access=wire.GENERIC_ALL, disposition=wire.FILE_OPEN, contexts=twrp)
    # macOS on the fruit share: the AAPL query (enriched listings, NFS ACEs), Finder
    # information written and read, the listing that shows it, the Time Machine share's size
    aapl = struct.pack("<IIQQ", 1, 0, 7, 0x17)
    afp_info = b"AFP\0" + struct.pack(">I", 0x00000100) + b"\0" * 8 + b"TEXTttxt" + b"\0" * 24 + b"\0" * 12
    mac = {"tree": fi.TREE_LAST}
    s["mac-share"] = encode_mode(SMB302) + msg(wire.TREE_CONNECT, tree_connect("\\\\srv\\mac")) + \
        msg(wire.CREATE, create("", options=wire.FILE_DIRECTORY_FILE, contexts=[(b"AAPL", aapl)]), **mac) + \
        msg(wire.QUERY_DIRECTORY, query_directory(37), fid=NEWEST, **mac) + \
        msg(wire.QUERY_INFO, query_info(2, 3), fid=NEWEST, **mac) + \
        msg(wire.QUERY_INFO, query_info(3, 0, 4096, 7), fid=NEWEST, **mac) + \
        msg(wire.CREATE, create("f.txt:AFP_AfpInfo"), **mac) + \
        msg(wire.WRITE, write(afp_info), fid=NEWEST, **mac) + \
        msg(wire.READ, read(60), fid=NEWEST, **mac) + \
        msg(wire.SET_INFO, set_info(1, 20, struct.pack("<Q", 0)), fid=NEWEST, **mac) + \
        msg(wire.QUERY_DIRECTORY, query_directory(37, "*", 0x10), fid=NEWEST + 1, **mac) + \
        msg(wire.CREATE, create("f.txt:AFP_Resource"), **mac) + \
        msg(wire.WRITE, write(b"resource", 0), fid=NEWEST, **mac) + \
        msg(wire.SET_INFO, set_info(3, 0, security_descriptor(), 4), fid=NEWEST + 2, **mac)
    # WRITEs held in the background, the second overlapping the first (it waits for it)
    s["held-writes-overlapping"] = on_file((wire.WRITE, write(b"abcdef", 0)), (wire.WRITE, write(b"XY", 2)),
                                           (wire.WRITE, write(b"far", 4096)), (wire.READ, read(8)),
                                           held_writes=True)
    # three 8 MiB READs in one compound: the frame's responses cannot hold them all
    s["compound-reads-over-budget"] = encode_mode(SMB302) + opened() + \
        msg(wire.SET_INFO, set_info(1, 20, struct.pack("<Q", 24 << 20)), fid=NEWEST) + \
        encode_compound([(Spec(wire.READ, fid=NEWEST, credit_charge=128), read(8 << 20))] * 3)
    s["oplock-break"] = on_file((wire.OPLOCK_BREAK, struct.pack("<HBBI16s", 24, 0, 0, 0, b"\0" * 16)))
    # a compound: create, write, read, query, close, each on the file the one before used
    s["compound"] = encode_mode(SMB302) + encode_compound([
        (Spec(wire.CREATE), create("compound.txt", disposition=wire.FILE_OVERWRITE_IF)),
        (Spec(wire.WRITE, flags=RELATED, fid=ANY), write(b"in a compound")),
        (Spec(wire.READ, flags=RELATED, fid=ANY), read(13)),
        (Spec(wire.QUERY_INFO, flags=RELATED, fid=ANY), query_info(1, 5)),
        (Spec(wire.CLOSE, flags=RELATED, fid=ANY), close())])
    s["compound-unrelated"] = encode_mode(SMB302) + encode_compound([
        (Spec(wire.ECHO), simple()), (Spec(wire.CREATE), create("f.txt")),
        (Spec(wire.CLOSE, fid=NEWEST), close())])
    # signed requests on the session that requires them; a signed-looking one on another
    s["signed"] = encode_mode(SMB302) + msg(wire.CREATE, create("f.txt"), session=fi.SIGNED, flags=0x02) + \
        msg(wire.READ, read(), session=fi.SIGNED, flags=0x02, fid=NEWEST) + \
        msg(wire.READ, read(), session=fi.SIGNED, fid=NEWEST) + \
        msg(wire.ECHO, simple(), flags=0x02)
    s["signed-311"] = encode_mode(SMB311) + msg(wire.CREATE, create("dir", options=1), session=fi.SIGNED, flags=0x02) + \
        msg(wire.QUERY_DIRECTORY, query_directory(), session=fi.SIGNED, flags=0x02, fid=NEWEST)
    # sealed: the session that must encrypt, then the same request unencrypted
    s["sealed"] = encode_mode(SMB302) + msg(wire.CREATE, create("f.txt"), session=fi.SEALED_SESSION) + \
        msg(wire.READ, read(), session=fi.SEALED_SESSION, fid=NEWEST) + \
        msg(wire.READ, read(), session=fi.SEALED_PLAIN, fid=NEWEST)
    s["sealed-311"] = encode_mode(SMB311) + fi.encode_sealed(msg(wire.ECHO, simple(), session=fi.SEALED_SESSION))
    s["signed-gmac-sealed-256"] = encode_mode(SMB311, other_offer=True) + \
        msg(wire.CREATE, create("f.txt"), session=fi.SIGNED, flags=0x02) + \
        msg(wire.READ, read(), session=fi.SEALED_SESSION, fid=NEWEST)
    s["no-encryption"] = encode_mode(SMB300, other_offer=True) + msg(wire.ECHO, simple(), session=fi.SEALED_SESSION) + \
        msg(wire.IOCTL, ioctl(0x00140204, vni_body(), 24))
    s["mutated"] = encode_mode(SMB302) + fi.encode_mutate([(66, 0xFF), (120, 0x80)], opened())
    # ids out of sequence: a repeated MessageId, one far away
    s["message-ids"] = encode_mode(SMB302) + msg(wire.ECHO, simple()) + msg(wire.ECHO, simple(), mid=fi.MID_REUSE) + \
        msg(wire.ECHO, simple(), mid=0xFF)
    # raw frames with the ids the set-up hands out
    s["raw-record"] = encode_mode(SMB302) + encode_raw(raw_frame(wire.ECHO, simple(), mid=13))
    s["raw-echo"] = encode_mode(fi.Mode.RAW) + raw_frame(wire.ECHO, simple(), mid=20)
    s["raw-compound"] = encode_mode(fi.Mode.RAW) + raw_compound([
        (wire.CREATE, create("f.txt"), 0),
        (wire.READ, read(20)[:16] + b"\xff" * 16 + read(20)[32:], wire.FLAGS_RELATED),
        (wire.CLOSE, close()[:8] + b"\xff" * 16, wire.FLAGS_RELATED)])
    s["raw-smb1"] = encode_mode(fi.Mode.RAW_FRESH) + b"\xffSMBr" + b"\0" * 27 + b"\x02NT LM 0.12\0\x02SMB 2.002\0\x02SMB 2.???\0"
    s["raw-negotiate"] = encode_mode(fi.Mode.RAW_FRESH) + raw_frame(wire.NEGOTIATE, negotiate(), session_id=0, mid=0)
    # generated messages: every choice the first of its list, then random choices
    rnd = random.Random(2024)
    for command in range(19):
        s[f"gen-{command}"] = encode_mode(SMB302) + opened() + encode_gen(Spec(command, fid=NEWEST), b"")
        s[f"gen-{command}-random"] = encode_mode(SMB311) + opened("dir", options=1) + \
            encode_gen(Spec(command, fid=NEWEST), bytes(rnd.randrange(256) for _ in range(48)))
    return s


def main() -> None:
    os.makedirs(CORPUS, exist_ok=True)
    for old in os.listdir(CORPUS):
        if old.startswith("seed-"):
            os.remove(os.path.join(CORPUS, old))
    made = seeds()
    for name, data in made.items():
        with open(os.path.join(CORPUS, f"seed-{name}"), "wb") as f:
            f.write(data)
    print(f"{len(made)} seeds, {sum(map(len, made.values()))} bytes, in {CORPUS}")
    if "--check" in sys.argv:
        check(made)


def check(made: dict[str, bytes]) -> None:
    """Runs every seed with the harness's checks; prints what each answer said."""
    import atheris
    sys.path.insert(0, os.path.dirname(os.path.dirname(CORPUS)))   # tests/: smbcore
    import smbfuzz_findings
    import smbfuzz_world
    world = smbfuzz_world.World()
    try:
        with smbfuzz_world.bounded_files():
            for name, data in made.items():
                seen = []           # the answers after the set-up's
                client = smbfuzz_world.run_input(world, data, atheris.FuzzedDataProvider,
                                                 smbfuzz_findings.tolerated(), seen)
                said = " ".join(f"{cmd}:{status:x}" for cmd, status in seen)
                known = f" known: {','.join(client.known)}" if client.known else ""
                print(f"{name:28} {'alive' if client.alive else 'dropped':8} {said}{known}")
    finally:
        world.close()


if __name__ == "__main__":
    main()
