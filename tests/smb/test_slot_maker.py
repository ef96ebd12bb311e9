"""smbring._wire.SlotMaker and smb.slots.slot_maker: instances of a dataclass with slots made
without its __init__ (an Open at each CREATE, its oplock record) are what the dataclass's
__init__ makes, field for field; what it refuses, it refuses with TypeError; nothing it takes
or makes is leaked or freed early (run under AddressSanitizer by `make test-asan`)."""
from __future__ import annotations

import dataclasses
import gc
import random
import sys
from dataclasses import dataclass, field

import pytest

from smbring._wire import SlotMaker
from smbring.smb.oplocks import Holder, make_holder
from smbring.smb.slots import slot_maker
from smbring.smb.state import Open, make_open


def fields_of(obj) -> dict:
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}


def some_values(cls, rng: random.Random) -> dict:
    """The required fields and a random choice of the others, each a fresh object."""
    values = {}
    for f in dataclasses.fields(cls):
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if required or rng.random() < 0.4:
            values[f.name] = rng.choice([object(), [rng.random()], rng.getrandbits(70), None, "x" * rng.randrange(5)])
    return values


@pytest.mark.parametrize("cls, make", [(Open, make_open), (Holder, make_holder)])
def test_made_as_the_dataclass_makes_it(cls, make):
    rng = random.Random(7)
    for _ in range(300):
        values = some_values(cls, rng)
        made, initialised = make(**values), cls(**values)
        assert type(made) is cls
        got, want = fields_of(made), fields_of(initialised)
        assert got.keys() == want.keys()
        for name in want:
            if name in values:
                assert got[name] is values[name], name      # the very object given
            else:
                assert got[name] == want[name] and type(got[name]) is type(want[name]), name


def test_each_instance_gets_its_own_factory_value():
    a = make_open(fd=1, parts=[], is_dir=False, access=0)
    b = make_open(fd=2, parts=[], is_dir=False, access=0)
    assert a.waiting == [] and b.waiting == [] and a.waiting is not b.waiting
    a.waiting.append(1)
    assert b.waiting == []
    # a default is shared, as the dataclass shares it
    assert a.dir_pattern is b.dir_pattern is Open(fd=3, parts=[], is_dir=False, access=0).dir_pattern


def test_made_instance_behaves_as_any_other():
    o = make_open(fd=5, parts=["a", "b"], is_dir=False, access=1, stream="s")
    o.position = 10
    assert o.position == 10 and o.is_stream and o.display_name() == "a\\b:s"
    assert o != make_open(fd=5, parts=["a", "b"], is_dir=False, access=1)     # (eq=False: identity)
    assert {o: 1}[o] == 1


def test_keyword_spelled_at_run_time():
    """A keyword not interned (made at run time, passed by **) is matched by its value."""
    name = "".join(["f", "d"])
    o = make_open(**{name: 9, "parts": [], "is_dir": True, "access": 0})
    assert o.fd == 9


@pytest.mark.parametrize("call, message", [
    (lambda: make_open(fd=1, parts=[], is_dir=False), "field access not given"),
    (lambda: make_open(fd=1, parts=[], is_dir=False, access=0, nonsense=1), "has no field 'nonsense'"),
    (lambda: make_open(1, [], False, 0), "fields are given by name"),
    (lambda: make_holder(stat_only=True), "field open not given"),
])
def test_calls_refused(call, message):
    with pytest.raises(TypeError, match=message):
        call()


def test_a_failing_factory_raises_and_leaks_nothing():
    given = object()

    def fails():
        raise RuntimeError("no")

    @dataclass(slots=True)
    class Two:
        a: object
        b: list = field(default_factory=fails)

    make = slot_maker(Two)
    before = sys.getrefcount(given)
    for _ in range(100):
        with pytest.raises(RuntimeError, match="no"):
            make(a=given)
    assert sys.getrefcount(given) == before


def test_references_held_and_released():
    given, shared = object(), object()

    @dataclass(slots=True)
    class Pair:
        a: object
        b: object = shared
        c: list = field(default_factory=list)

    make = slot_maker(Pair)
    before = sys.getrefcount(given), sys.getrefcount(shared)
    made = [make(a=given) for _ in range(1000)]
    assert sys.getrefcount(given) == before[0] + 1000 and sys.getrefcount(shared) == before[1] + 1000
    del made
    assert (sys.getrefcount(given), sys.getrefcount(shared)) == before
    # an instance in a cycle is collected (tracked by the collector as the dataclass's are)
    p = make(a=None)
    p.a = p
    assert gc.is_tracked(p)
    p.c.append(given)
    del p
    gc.collect()
    assert sys.getrefcount(given) == before[0]


@dataclass(slots=True)
class Plain:
    a: object
    b: int = 0


class NotSlots:
    a = 1


class Borrowed:
    __slots__ = ()


Borrowed.a = Plain.__dict__["a"]        # another class's slot descriptor


@pytest.mark.parametrize("args, message", [
    ((NotSlots, ("a",), (), ()), "NotSlots.a is not a writable slot"),
    ((Borrowed, ("a",), (), ()), "Borrowed.a is not a writable slot"),
    ((Plain, ("missing",), (), ()), "Plain.missing is not a writable slot"),
    ((Plain, ("a", "a"), (), ()), "field a named twice"),
    ((Plain, ("a",), (("a", 1),), ()), "field a named twice"),
    ((Plain, ("a",), (), (("b", 5),)), "field b's factory is not callable"),
    ((Plain, (1,), (), ()), "a field's name is a str"),
    ((Plain, ("a",), ("b",), ()), r"a default or a factory is a \(name, value\) pair"),
    ((Plain, ("a",), (), (("b", list, 1),)), r"a default or a factory is a \(name, value\) pair"),
    ((Plain, ["a"], (), ()), "must be tuple, not list"),
    ((int, (), (), ()), "int cannot be allocated here"),
])
def test_makers_refused(args, message):
    with pytest.raises(TypeError, match=message):
        SlotMaker(*args)


def test_too_many_fields_refused():
    many = dataclass(slots=True)(type("Many", (), {"__annotations__": {f"f{i}": int for i in range(65)}}))
    with pytest.raises(TypeError, match="65 fields, more than 64"):
        slot_maker(many)


def test_classes_whose_init_does_more_refused():
    @dataclass(slots=True)
    class Posted:
        a: int

        def __post_init__(self):
            pass

    @dataclass(slots=True)
    class Hidden:
        a: int
        b: int = field(default=0, init=False)

    for cls in (Posted, Hidden):
        with pytest.raises(TypeError, match="does more than assign its fields"):
            slot_maker(cls)


def test_uninitialised_maker():
    with pytest.raises(RuntimeError, match="not initialised"):
        SlotMaker.__new__(SlotMaker).make(a=1)
    failed = SlotMaker.__new__(SlotMaker)
    with pytest.raises(TypeError):
        failed.__init__(Plain, ("a", "missing"), (), ())
    with pytest.raises(RuntimeError, match="not initialised"):
        failed.make(a=1)


def test_initialised_once():
    """A maker's fields never change (a factory it calls could otherwise change them under
    the call that runs it)."""
    maker = SlotMaker(Plain, ("a",), (("b", 0),), ())
    with pytest.raises(TypeError, match="already initialised"):
        maker.__init__(Plain, ("a", "b"), (), ())
    assert maker.make(a=1).b == 0
