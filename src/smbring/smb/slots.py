"""Instances of a dataclass with slots made without its __init__, for the classes made on the
per-request path (an open, its oplock record): a dataclass's generated __init__ assigns
every field in Python, one store after another, however few the caller names."""
from __future__ import annotations

import dataclasses

from smbring._wire import SlotMaker


def slot_maker(cls: type):
    """A function that makes instances of `cls`, a dataclass with slots, as `cls(**fields)`
    makes them (by name only), with no __init__ run: its values go straight into the slots
    (`smbring._wire.SlotMaker`). For a class made on the per-request path, whose generated
    __init__ would assign every field in Python: the class's own __init__, if it has one, is
    not what makes them. Refused (TypeError) for a class whose generated __init__ does more
    than assign its fields (a field left out of it, a __post_init__)."""
    fields = dataclasses.fields(cls)
    if hasattr(cls, "__post_init__") or not all(f.init for f in fields):
        raise TypeError(f"{cls.__name__}'s __init__ does more than assign its fields")
    required = tuple(f.name for f in fields if f.default is dataclasses.MISSING
                     and f.default_factory is dataclasses.MISSING)
    defaults = tuple((f.name, f.default) for f in fields if f.default is not dataclasses.MISSING)
    factories = tuple((f.name, f.default_factory) for f in fields
                      if f.default_factory is not dataclasses.MISSING)
    return SlotMaker(cls, required, defaults, factories).make
