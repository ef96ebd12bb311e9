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


def test_the_root_override_passes_every_descriptor_and_only_it():
    """An `admin users` token (overrides) gets all a descriptor denies everyone, as smbd's
    root override; root's token without it still meets the deny."""
    denied = dacl(Ace(acl.DENIED, 0, acl.FILE_ALL_ACCESS, acl.EVERYONE))
    admin = acl.unix_token(0, 0, overrides=True)
    assert acl.check(READ | WRITE_DATA | acl.DELETE, denied, denied, admin) == READ | WRITE_DATA | acl.DELETE
    assert acl.check(acl.MAXIMUM_ALLOWED, denied, None, admin) & acl.FILE_ALL_ACCESS == acl.FILE_ALL_ACCESS
    root = acl.unix_token(0, 0)
    assert acl.check(READ, denied, None, root) == -1
    # a guest never has it, whichever account it acts as
    assert not acl.unix_token(0, 0, guest=True, overrides=True).overrides


def test_inheritance():
    parent = dacl(Ace(acl.ALLOWED, acl.OBJECT_INHERIT, READ, acl.CREATOR_OWNER),
                  Ace(acl.ALLOWED, acl.CONTAINER_INHERIT, 0x1F01FF, acl.EVERYONE),
                  Ace(acl.ALLOWED, 0, WRITE_DATA, acl.EVERYONE))               # not inheritable
    f = acl.inherit(parent, is_dir=False)
    # INHERITED marks the ACEs only where the parent's DACL is AUTO_INHERITED
    assert [(a.sid, a.mask, a.flags) for a in f.dacl] == [(acl.OWNER_SID, READ, 0)]
    d = acl.inherit(parent, is_dir=True)
    # an object-inherit ACE stays inherit-only on a directory, CREATOR OWNER kept for its files
    assert [(a.sid, a.flags) for a in d.dacl] == [
        (acl.CREATOR_OWNER, acl.OBJECT_INHERIT | acl.INHERIT_ONLY),
        (acl.EVERYONE, acl.CONTAINER_INHERIT)]
    assert acl.inherit(None, is_dir=False) is None
    auto = dacl(*parent.dacl, control=acl.SE_DACL_PRESENT | acl.SE_DACL_AUTO_INHERITED)
    f = acl.inherit(auto, is_dir=False)
    assert f.control & acl.SE_DACL_AUTO_INHERITED and f.dacl[0].flags == acl.INHERITED


def test_creator_owner_on_a_container_is_replaced_and_kept_inherit_only():
    generic_all = 0x10000000
    parent = dacl(Ace(acl.ALLOWED, acl.OBJECT_INHERIT | acl.CONTAINER_INHERIT, generic_all, acl.CREATOR_OWNER))
    d = acl.inherit(parent, is_dir=True)
    assert [(a.sid, a.mask, a.flags) for a in d.dacl] == [
        (acl.OWNER_SID, acl.FILE_ALL_ACCESS, 0),                          # generic rights mapped
        (acl.CREATOR_OWNER, generic_all, acl.OBJECT_INHERIT | acl.CONTAINER_INHERIT | acl.INHERIT_ONLY)]
    f = acl.inherit(d, is_dir=False)
    assert [(a.sid, a.mask, a.flags) for a in f.dacl] == [(acl.OWNER_SID, acl.FILE_ALL_ACCESS, 0)]


@pytest.mark.parametrize("flags, file_flags, dir_flags", [
    (0, None, None),
    (acl.NO_PROPAGATE, None, None),
    (acl.OBJECT_INHERIT | acl.NO_PROPAGATE, 0, None),
    (acl.CONTAINER_INHERIT | acl.NO_PROPAGATE, None, 0),
    (acl.INHERIT_ONLY | acl.CONTAINER_INHERIT, None, acl.CONTAINER_INHERIT),
    (acl.INHERIT_ONLY | acl.OBJECT_INHERIT, 0, acl.OBJECT_INHERIT | acl.INHERIT_ONLY),
])
def test_inherit_flags_and_the_default_dacl(flags, file_flags, dir_flags):
    parent = dacl(Ace(acl.ALLOWED, flags, WRITE_DATA, acl.EVERYONE))
    for is_dir, want in ((False, file_flags), (True, dir_flags)):
        child = acl.inherit(parent, is_dir=is_dir)
        if want is None:        # nothing to inherit: Windows' default, owner and SYSTEM
            assert [a.sid for a in child.dacl] == [acl.OWNER_SID, acl.SYSTEM]
        else:
            assert [(a.sid, a.flags) for a in child.dacl] == [(acl.EVERYONE, want)]


def test_an_inherited_ace_grants_no_more_than_the_parent_says():
    parent = dacl(Ace(acl.ALLOWED, acl.OBJECT_INHERIT, READ, acl.EVERYONE),
                  Ace(acl.ALLOWED, 0, acl.FILE_ALL_ACCESS, acl.EVERYONE))      # the folder only
    child = acl.inherit(parent, is_dir=False, token=acl.unix_token(4242, 4242))
    who = acl.unix_token(4343, 4343)
    assert acl.check(acl.MAXIMUM_ALLOWED, child, None, who) == READ
    assert acl.check(WRITE_DATA, child, None, who) == -1


def test_owner_rights_replace_the_owners_implicit_rights():
    owner = acl.USER_TOKEN
    d = Descriptor(control=acl.SE_SELF_RELATIVE | acl.SE_DACL_PRESENT, owner=owner.owner,
                   dacl=[Ace(acl.ALLOWED, 0, READ, owner.owner), Ace(acl.ALLOWED, 0, WRITE_DATA, acl.OWNER_RIGHTS)])
    assert acl.granted(d, owner) == READ | WRITE_DATA                   # no WRITE_DAC
    assert acl.check(acl.WRITE_DAC, d, None, owner) == -1
    deny = Descriptor(control=acl.SE_SELF_RELATIVE | acl.SE_DACL_PRESENT, owner=owner.owner,
                      dacl=[Ace(acl.DENIED, 0, 0x1, acl.OWNER_RIGHTS), Ace(acl.ALLOWED, 0, READ, owner.owner)])
    assert acl.granted(deny, owner) == READ & ~0x1
    # OWNER RIGHTS ACEs say nothing to anyone but the owner
    other = acl.unix_token(4343, 4343)
    assert acl.granted(d, other) == 0
    # without one, the owner keeps READ_CONTROL and WRITE_DAC, and a later deny takes nothing
    plain = Descriptor(control=acl.SE_SELF_RELATIVE | acl.SE_DACL_PRESENT, owner=owner.owner,
                       dacl=[Ace(acl.ALLOWED, 0, READ | WRITE_DATA, owner.owner),
                             Ace(acl.DENIED, 0, WRITE_DATA | acl.WRITE_DAC, owner.owner)])
    assert acl.granted(plain, owner) == READ | WRITE_DATA | acl.WRITE_DAC


def test_set_info_maps_generic_rights_and_keeps_auto_inherited_only_on_request():
    old = dacl(Ace(acl.ALLOWED, 0, READ, acl.EVERYONE))
    new = Descriptor(control=acl.SE_DACL_PRESENT | acl.SE_DACL_AUTO_INHERITED,
                     dacl=[Ace(acl.ALLOWED, 0, 0x80000000, acl.EVERYONE),
                           Ace(acl.ALLOWED, acl.OBJECT_INHERIT | acl.INHERIT_ONLY, 0x80000000, acl.CREATOR_OWNER)])
    merged = acl.merge(old, new, acl.DACL)
    assert [a.mask for a in merged.dacl] == [READ, 0x80000000]          # inherit-only keeps its generic bit
    assert not merged.control & acl.SE_DACL_AUTO_INHERITED
    new.control |= acl.SE_DACL_AUTO_INHERIT_REQ
    merged = acl.merge(old, new, acl.DACL)
    assert merged.control & acl.SE_DACL_AUTO_INHERITED and not merged.control & acl.SE_DACL_AUTO_INHERIT_REQ


def test_set_info_keeps_auto_inherited_as_set_without_canonicalization():
    """`acl flag inherited canonicalization = no`: the flag stays as the setter set it,
    whether or not the request flag came with it (and the request flag is never stored)."""
    old = dacl(Ace(acl.ALLOWED, 0, READ, acl.EVERYONE))
    new = Descriptor(control=acl.SE_DACL_PRESENT | acl.SE_DACL_AUTO_INHERITED,
                     dacl=[Ace(acl.ALLOWED, 0, READ, acl.EVERYONE)])
    assert acl.merge(old, new, acl.DACL, canonical_inherited=False).control & acl.SE_DACL_AUTO_INHERITED
    assert not acl.merge(old, new, acl.DACL).control & acl.SE_DACL_AUTO_INHERITED
    new.control = acl.SE_DACL_PRESENT | acl.SE_DACL_AUTO_INHERIT_REQ
    merged = acl.merge(old, new, acl.DACL, canonical_inherited=False)
    assert not merged.control & (acl.SE_DACL_AUTO_INHERITED | acl.SE_DACL_AUTO_INHERIT_REQ)


def test_parent_list_directory_grants_read_attributes():
    nothing = dacl(Ace(acl.ALLOWED, 0, WRITE_DATA, acl.CREATOR_OWNER))
    lister = dacl(Ace(acl.ALLOWED, 0, 0x1, acl.EVERYONE))
    assert acl.check(0x80, nothing, None) == -1
    assert acl.check(0x80, nothing, lister) == 0x80


def test_a_protected_dacl_given_at_creation_inherits_nothing():
    parent = dacl(Ace(acl.ALLOWED, acl.OBJECT_INHERIT, READ, acl.EVERYONE),
                  control=acl.SE_DACL_PRESENT | acl.SE_DACL_AUTO_INHERITED)
    own = [Ace(acl.ALLOWED, 0, WRITE_DATA, acl.OWNER_SID)]
    merged = acl.complete(Descriptor(control=acl.SE_DACL_PRESENT, dacl=list(own)), parent, is_dir=False)
    assert [a.sid for a in merged.dacl] == [acl.OWNER_SID, acl.EVERYONE]
    assert merged.dacl[1].flags == acl.INHERITED
    protected = acl.complete(Descriptor(control=acl.SE_DACL_PRESENT | acl.SE_DACL_PROTECTED, dacl=list(own)),
                             parent, is_dir=False)
    assert protected.dacl == own


def test_setting_no_dacl_sets_a_null_dacl_and_creation_fills_gaps():
    old = dacl(Ace(acl.ALLOWED, 0, READ, acl.EVERYONE))
    merged = acl.merge(old, Descriptor(control=0), acl.DACL)
    assert merged.control & acl.SE_DACL_PRESENT and merged.dacl is None
    assert acl.check(WRITE_DATA, merged, None) == WRITE_DATA
    made = acl.complete(Descriptor(control=0), None, is_dir=False)
    assert made.owner == acl.OWNER_SID and made.control & acl.SE_DACL_PRESENT
    assert [a.sid for a in made.dacl] == [acl.OWNER_SID, acl.SYSTEM]


def test_without_a_stored_descriptor_write_dac_and_write_owner_are_the_unix_owner_s():
    alice, bob = acl.unix_token(4242, 4242), acl.unix_token(4343, 4242)
    alices = acl.unix_user(4242)
    assert acl.granted(None, alice, alices) == acl.FILE_ALL_ACCESS
    assert acl.granted(None, bob, alices) == acl.FILE_ALL_ACCESS & ~(acl.WRITE_DAC | acl.WRITE_OWNER)
    assert acl.check(acl.WRITE_DAC, None, None, bob, alices) == -1
    assert acl.check(acl.WRITE_OWNER | 0x1, None, None, bob, alices) == -1
    assert acl.check(0x10000000, None, None, bob, alices) == -1                 # GENERIC_ALL
    assert not acl.check(acl.MAXIMUM_ALLOWED, None, None, bob, alices) & (acl.WRITE_DAC | acl.WRITE_OWNER)
    assert acl.check(acl.WRITE_DAC, None, None, acl.unix_token(0, 0), alices) == acl.WRITE_DAC   # root
    guest_of_alice = acl.unix_token(4242, 4242, guest=True)
    assert acl.check(acl.WRITE_DAC, None, None, guest_of_alice, alices) == -1
    assert acl.check(acl.WRITE_DAC, None, None, bob) == acl.WRITE_DAC           # a file it creates


def test_the_unix_owner_not_the_named_owner_holds_the_owner_s_rights():
    alice, bob = acl.unix_token(4242, 4242), acl.unix_token(4343, 4343)
    named_bob = Descriptor(control=acl.SE_SELF_RELATIVE | acl.SE_DACL_PRESENT, owner=bob.owner,
                           dacl=[Ace(acl.ALLOWED, 0, READ, acl.EVERYONE)])
    alices = acl.unix_user(4242)
    assert not acl.granted(named_bob, bob, alices) & acl.WRITE_DAC
    assert acl.granted(named_bob, alice, alices) & acl.WRITE_DAC
    assert acl.granted(named_bob, acl.unix_token(0, 0), alices) & acl.WRITE_DAC


def test_an_owner_may_be_named_only_as_the_unix_owner():
    alice, bob = acl.unix_token(4242, 4242), acl.unix_token(4343, 4343)
    alices = acl.unix_user(4242)
    assert acl.may_name_owner(alice, alices, alices)
    assert not acl.may_name_owner(alice, bob.owner, alices)                    # no giving away
    assert not acl.may_name_owner(bob, bob.owner, alices)                      # no taking either
    assert acl.may_name_owner(bob, alices, alices)
    assert acl.may_name_owner(bob, acl.SYSTEM, alices, current=acl.SYSTEM)     # as it is
    assert acl.may_name_owner(acl.unix_token(0, 0), acl.EVERYONE, alices)      # root: anyone


def test_inheriting_thousands_of_aces_compares_them_in_a_set(monkeypatch):
    """Duplicates among inherited ACEs, and those a given DACL already holds, are found by
    key, not by comparing every ACE with every other: a parent DACL of thousands of ACEs
    (xattrs of 64 KiB hold some 3,000) made each CREATE below it millions of comparisons."""
    many = [Ace(acl.ALLOWED, acl.OBJECT_INHERIT, READ, acl.EVERYONE[:-4] + i.to_bytes(4, "little"))
            for i in range(1500)]
    parent = dacl(*many, many[0], control=acl.SE_DACL_PRESENT | acl.SE_DACL_AUTO_INHERITED)
    compared = []
    plain_eq = Ace.__eq__
    monkeypatch.setattr(Ace, "__eq__", lambda a, b: compared.append(1) or plain_eq(a, b))
    f = acl.inherit(parent, is_dir=False)
    given = dacl(many[5], control=acl.SE_DACL_PRESENT)
    c = acl.complete(given, parent, is_dir=False)
    assert len(compared) < 100, len(compared)
    assert [a.sid for a in f.dacl] == [a.sid for a in many]                 # each once, in order
    assert [a.sid for a in c.dacl] == [many[5].sid] + [a.sid for a in many]   # its own first
    assert c.dacl[0] == many[5] and all(a.flags == acl.INHERITED for a in c.dacl[1:])
