"""vfs.short_names: a long name's 8.3 name and the way back from it."""
import pytest

from smbring.vfs import short_names
from smbring.vfs.short_names import is_short_name, long_name_of, may_be_mangled, short_name

LONG_NAMES = ["quarterly report of the team.text", ".hidden file", "ß-straße long.docx",
              "A.y.F1KS6_8", "no extension at all", "...", "~tilde first.txt", "日本語のファイル名.txt"]


@pytest.mark.parametrize("name", LONG_NAMES)
def test_every_long_name_is_found_from_its_short_name(name):
    short = short_name(name)
    assert is_short_name(short) and may_be_mangled(short), short
    names = ["other", short_name("other long name.txt"), name, "zzz"]
    assert long_name_of(names, short) == name
    assert long_name_of(names, short.lower()) == name        # in any case


def test_names_that_are_8_3_already_are_their_own_and_never_looked_for():
    assert short_name("readme.txt") == "README.TXT"
    assert not may_be_mangled("README.TXT")
    assert long_name_of(["readme.txt"], "README.TXT") is None     # (the case lookup finds it)
    # a name with a tilde that is its own short name is not another's
    assert long_name_of(["AB~12.TXT"], "AB~12.TXT") is None


@pytest.mark.parametrize("name", ["LONG~", "~AB.TXT", "LONGN~ABC.TXT", "LONGN~A!.TXT", "LONG NAME~AB", "LONGN~AB.TEXT"])
def test_what_cannot_be_a_mangled_name_is_not_looked_for(name):
    assert not may_be_mangled(name)
    assert long_name_of(["anything"], name) is None


def test_a_huge_directory_is_not_scanned(monkeypatch):
    name = "quarterly report of the team.text"
    monkeypatch.setattr(short_names, "MAX_SCANNED", 10)
    assert long_name_of([name] + [f"f{i}" for i in range(9)], short_name(name)) == name
    assert long_name_of([name] + [f"f{i}" for i in range(10)], short_name(name)) is None
