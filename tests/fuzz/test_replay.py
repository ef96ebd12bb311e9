"""Replays every input in tests/fuzz/crashes (what the fuzzer found, reduced by hand to the
requests that matter) through the harness's checks, none tolerated.

A file is named after its finding (`<kind>` or `<kind>-<n>`). While the kind is listed in
smbfuzz_findings.KNOWN (reported, not fixed), its replay must still break a check with that
kind; once the bug is fixed, that replay fails here until the kind leaves KNOWN, and from then
on it must pass, and the fuzzer stops passing over the finding.
"""
import os

import atheris
import pytest

import smbfuzz_world
from smbfuzz_findings import KNOWN, Finding

CRASHES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "crashes")


def kind_of(name: str) -> str:
    return name.rsplit("-", 1)[0] if name.rsplit("-", 1)[-1].isdigit() else name


def replay(world, name: str) -> None:
    with open(os.path.join(CRASHES, name), "rb") as f:
        data = f.read()
    smbfuzz_world.run_input(world, data, atheris.FuzzedDataProvider, tolerate=frozenset())


@pytest.mark.parametrize("name", sorted(n for n in os.listdir(CRASHES) if kind_of(n) not in KNOWN))
def test_fixed_finding_stays_fixed(world, name):
    replay(world, name)


@pytest.mark.parametrize("name", sorted(n for n in os.listdir(CRASHES) if kind_of(n) in KNOWN))
def test_known_finding_still_reproduces(world, name):
    try:
        replay(world, name)
    except Finding as found:
        assert found.kind == kind_of(name), f"{name} now breaks another check: {found}"
    else:
        pytest.fail(f"{name} passes every check: if its bug is fixed, remove {kind_of(name)!r} from KNOWN")


def test_every_known_finding_has_a_reproducer():
    assert set(KNOWN) <= {kind_of(n) for n in os.listdir(CRASHES)}
