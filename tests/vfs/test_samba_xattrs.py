"""Samba's metadata formats read back (smbring.vfs.samba_xattrs): values Samba 4.17's smbd
wrote, and every truncation and many mutations of them, which a local user could store in
his own files' user.* xattrs. Each parser returns a result or None, never raises."""
import random
import struct

from appledouble import macos_appledouble
from smbring.smb import acl
from smbring.vfs import samba_xattrs as sx

# written by smbd 4.17 (acl_xattr, streams_xattr, fruit with its defaults) for a file made
# hidden, a directory, and a file with Finder information "TEXTttxt" and a resource fork
DOSATTRIB_HIDDEN = bytes.fromhex(
    "000005000500000011000000220000009c2dc324f783dd01")
NTACL_DIR = bytes.fromhex(
    "0400040000000200040002000100ce7b603987c57985b933b6a9d3f2829b5753953f048fb28f384878e8887d"
    "6dd00000000000000000000000000000000000000000000000000000000000000000706f7369785f61636c00"
    "4806c424f783dd01a0128344665c815f99d0e7ccae68b7d5ff6b4288a23c4bc8b18214cf7380d78d00000000"
    "0000000000000000000000000000000000000000000000000000000001000480b4000000d000000000000000"
    "ec00000001050000000000051500000023553fbefcedafd24b70fef3e8030000010500000000000515000000"
    "23553fbefcedafd24b70fef30102000002008c000500000000002400ff011f00010500000000000515000000"
    "23553fbefcedafd24b70fef3e8030000000b1400ff011f0001010000000000030000000000002400a9001200"
    "01050000000000051500000023553fbefcedafd24b70fef301020000000b1400a90012000101000000000003"
    "0100000000031400a9001200010100000000000100000000")
NETATALK_METADATA = bytes.fromhex(
    "0005160700020000000000000000000000000000000000000008000000040000009a00000000000000080000"
    "016200000010000000090000007a000000200000000e00000172000000048044455600000176000000008049"
    "4e4f0000017e000000008053594e00000186000000008053567e0000018e0000000054455854747478740000"
    "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "000032a5838c32a5838c8000000032a5838c0000000000000000000000000000000000000000000000000000"
    "000000000000")
APPLEDOUBLE_FILE = bytes.fromhex(
    "00051607000200004e65746174616c6b20202020202020200002000000020000005200000005000000090000"
    "0032000000200000000000000000000000000000000000000000000000000000000000000000646174610a")


# system.posix_acl_access: owner rwx, user 1001 rw-, group r-x, mask rwx, other r--
POSIX_ACL = bytes.fromhex("02000000" "01000700ffffffff" "02000600e9030000" "04000500ffffffff"
                          "10000700ffffffff" "20000400ffffffff")


def test_posix_acls_as_samba_hashes_them():
    """The kernel's ACL as libacl hands it to Samba (smb_acl_tag_t tags, ids of named users
    and groups only); an access ACL the kernel keeps in the mode alone is the mode's three
    entries; the hash is of Samba's NDR encoding (its value for this ACL, a file of root's, mode
    0100775, as smbd 4.17 stored it in security.NTACL)."""
    assert sx.posix_acl_entries(POSIX_ACL, 0) == [(2, None, 7), (1, 1001, 6), (4, None, 5), (6, None, 7),
                                                  (5, None, 4)]
    assert sx.posix_acl_entries(None, 0o100754) == [(2, None, 7), (4, None, 5), (5, None, 4)]
    assert sx.posix_acl_entries(POSIX_ACL[:-1], 0) is None
    assert sx.posix_acl_entries(b"\x03" + POSIX_ACL[1:], 0) is None
    smbd_wrote = [(2, None, 7), (1, 0, 7), (4, None, 5), (3, 0, 5), (6, None, 7), (5, None, 5)]
    assert sx.posix_acl_hash(smbd_wrote, None, 0, 0, 0o100775).hex().startswith("5dd2b193e43b4dc3")


def test_values_samba_wrote():
    attrs, created = sx.dos_info(DOSATTRIB_HIDDEN)
    assert attrs == 0x22 and created > 0
    version, sd, posix_hash = sx.nt_acl(NTACL_DIR)
    assert version == 4 and len(posix_hash) == 32
    descriptor = acl.parse(sd)
    assert descriptor.owner is not None and len(descriptor.dacl) == 5
    assert sx.finder_info(NETATALK_METADATA) == b"TEXTttxt" + bytes(24)
    entries = sx.appledouble_entries(APPLEDOUBLE_FILE, len(APPLEDOUBLE_FILE))
    offset, length = entries[sx.AD_RESOURCE_FORK]
    assert APPLEDOUBLE_FILE[offset:offset + length] == b"data\n"
    assert sx.finder_info(APPLEDOUBLE_FILE) is None          # (all zeros: none)
    assert sx.dos_info(b"0x22\0") == (0x22, None)            # (Samba before 3.5: the hex alone)
    assert sx.stream_name("user.DosStream.Zone.Identifier:$DATA") == "Zone.Identifier"
    assert sx.stream_name("user.DosStream.:$DATA") is None and sx.stream_name("user.other") is None
    assert sx.stream_data(b"abc\0") == b"abc"


def test_truncated_and_mutated_values_never_raise():
    rnd = random.Random(1740)
    for blob in (DOSATTRIB_HIDDEN, NTACL_DIR, NETATALK_METADATA, APPLEDOUBLE_FILE, POSIX_ACL):
        variants = [blob[:n] for n in range(len(blob))]
        for _ in range(2000):
            mutated = bytearray(blob)
            for _ in range(rnd.randint(1, 4)):
                mutated[rnd.randrange(len(mutated))] = rnd.randrange(256)
            variants.append(bytes(mutated))
        variants += [bytes(rnd.randrange(256) for _ in range(rnd.randint(0, 300))) for _ in range(500)]
        for value in variants:
            sx.dos_info(value)
            found = sx.nt_acl(value)
            if found is not None:
                sd = found.descriptor
                offsets = [o for o in struct.unpack_from("<4I", sd, 4) if o]
                assert all(20 <= o < len(sd) for o in offsets)
            sx.finder_info(value)
            found = sx.posix_acl_entries(value, 0o100644)
            assert found is None or all(tag in range(1, 7) and perm <= 7 for tag, _, perm in found)
            content = sx.appledouble_content(value, len(value))
            if content is not None:
                offset, length = content.resource_fork
                assert offset + length <= len(value)
            entries = sx.appledouble_entries(value, len(value))
            if entries is not None:
                assert all(o + n <= len(value) for o, n in entries.values())


def test_embedded_attributes_parse_and_their_mutations_never_raise():
    """macOS's ATTR block (built as macOS lays it out): read
    back as written; truncated or mutated, None or values that lie inside the block."""
    xattrs = [(b"com.apple.metadata:_kMDItemUserTags", b"tags"), (b"foo:bar", b"baz"), (b"e", b"")]
    blob = macos_appledouble(b"TEXTttxt", xattrs, b"fork" * 10)
    entries = sx.appledouble_entries(blob, len(blob))
    assert sx.appledouble_xattrs(blob, entries) == [(n.decode(), v) for n, v in xattrs]
    assert sx.finder_info(blob[:200], entries) == b"TEXTttxt".ljust(32, b"\0")
    assert sx.mac_stream_name("foo:bar|\x01") == "foo\uf022bar\uf027\uf001"
    rnd = random.Random(8)
    variants = [blob[:n] for n in range(len(blob))]
    for _ in range(3000):
        mutated = bytearray(blob)
        for _ in range(rnd.randint(1, 4)):
            mutated[rnd.randrange(50, len(mutated))] = rnd.randrange(256)
        variants.append(bytes(mutated))
    for value in variants:
        found = sx.appledouble_xattrs(value, entries)
        for name, data in found or ():
            assert name and "\0" not in name and len(data) <= len(value)
