"""Security descriptors (smb.acl): wire round trips, DACL evaluation, inheritance."""
import pytest

from smbring.smb import acl
from smbring.smb.acl import Ace, Descriptor

READ = 0x00120089
WRITE_DATA = 0x2


def dacl(*aces, control=acl.SE_DACL_PRESENT):
    return Descriptor(control=acl.SE_SELF_RELATIVE | control, owner=acl.OWNER_SID,
                      group=acl.GROUP_SID, dacl=list(aces))


def test_pack_parse_round_trip_and_parts():
    d = dacl(Ace(acl.ALLOWED, acl.OBJECT_INHERIT, READ, acl.EVERYONE),
             Ace(acl.DENIED, 0, WRITE_DATA, acl.AUTHENTICATED_USERS))
    back = acl.parse(d.pack())
    assert back.owner == d.owner and back.group == d.group and back.dacl == d.dacl
    only_owner = acl.parse(d.pack(acl.OWNER))
    assert only_owner.owner == d.owner and only_owner.group is None
    assert not only_owner.control & acl.SE_DACL_PRESENT
    null = acl.parse(Descriptor(control=acl.SE_DACL_PRESENT, dacl=None).pack())
    assert null.control & acl.SE_DACL_PRESENT and null.dacl is None


@pytest.mark.parametrize("blob", [b"", b"\x01" * 10, bytes(20)[:0] + b"\x02" + bytes(19),
                                  b"\x01\x00\x04\x80" + b"\xff\xff\x00\x00" + bytes(12)])
def test_malformed_descriptors_are_refused(blob):
    with pytest.raises(acl.BadDescriptor):
        acl.parse(blob)


def test_access_check():
    readers = dacl(Ace(acl.ALLOWED, 0, READ, acl.EVERYONE))
    assert acl.check(READ, readers, None) == READ
    assert acl.check(WRITE_DATA, readers, None) == -1
    assert acl.check(0x80000000, readers, None) == READ               # GENERIC_READ mapped
    assert acl.check(acl.MAXIMUM_ALLOWED, readers, None) & READ == READ
    # the owner always keeps READ_CONTROL and WRITE_DAC, even with nothing granted
    nothing = dacl(Ace(acl.ALLOWED, 0, READ, acl.CREATOR_OWNER))       # CREATOR_OWNER matches nobody
    assert acl.check(acl.READ_CONTROL | acl.WRITE_DAC, nothing, None) > 0
    assert acl.check(WRITE_DATA, nothing, None) == -1
    # a deny before an allow wins; DELETE also comes from the parent's FILE_DELETE_CHILD
    d = dacl(Ace(acl.DENIED, 0, WRITE_DATA, acl.EVERYONE), Ace(acl.ALLOWED, 0, 0x1F01FF, acl.EVERYONE))
    assert acl.check(WRITE_DATA, d, None) == -1
    assert acl.check(acl.DELETE, readers, None) == -1
    parent = dacl(Ace(acl.ALLOWED, 0, acl.FILE_DELETE_CHILD, acl.EVERYONE))
    assert acl.check(acl.DELETE, readers, parent) == acl.DELETE
    # a NULL DACL grants everything; guests are not the owner
    assert acl.check(WRITE_DATA, Descriptor(control=acl.SE_DACL_PRESENT, dacl=None), None) == WRITE_DATA
    assert acl.check(acl.READ_CONTROL, nothing, None, acl.GUEST_TOKEN) == -1


def test_inheritance():
    parent = dacl(Ace(acl.ALLOWED, acl.OBJECT_INHERIT, READ, acl.CREATOR_OWNER),
                  Ace(acl.ALLOWED, acl.CONTAINER_INHERIT, 0x1F01FF, acl.EVERYONE),
                  Ace(acl.ALLOWED, 0, WRITE_DATA, acl.EVERYONE))               # not inheritable
    f = acl.inherit(parent, is_dir=False)
    assert [(a.sid, a.mask, a.flags) for a in f.dacl] == [(acl.OWNER_SID, READ, acl.INHERITED)]
    d = acl.inherit(parent, is_dir=True)
    assert [(a.sid, a.flags) for a in d.dacl] == [
        (acl.OWNER_SID, acl.OBJECT_INHERIT | acl.INHERIT_ONLY | acl.INHERITED),
        (acl.EVERYONE, acl.CONTAINER_INHERIT | acl.INHERITED)]
    assert acl.inherit(None, is_dir=False) is None


def test_setting_no_dacl_sets_a_null_dacl_and_creation_fills_gaps():
    old = dacl(Ace(acl.ALLOWED, 0, READ, acl.EVERYONE))
    merged = acl.merge(old, Descriptor(control=0), acl.DACL)
    assert merged.control & acl.SE_DACL_PRESENT and merged.dacl is None
    assert acl.check(WRITE_DATA, merged, None) == WRITE_DATA
    made = acl.complete(Descriptor(control=0), None, is_dir=False)
    assert made.owner == acl.OWNER_SID and made.control & acl.SE_DACL_PRESENT
    assert [a.sid for a in made.dacl] == [acl.OWNER_SID, acl.SYSTEM]
