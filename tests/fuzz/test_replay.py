"""Replays every input in tests/fuzz/crashes (what the fuzzer found, reduced by hand to the
requests that matter) through the harness's checks, none tolerated.

A file is named after its finding (`<kind>` or `<kind>-<n>`); while the kind is listed in
smbfuzz_findings.KNOWN (reported, not fixed), its replay is expected to fail. Once the bug is
fixed, remove the kind from KNOWN: the replay then must pass, and the fuzzer stops passing
over the finding.
"""
import os

import atheris
import pytest

import smbfuzz_world
from smbfuzz_findings import KNOWN

CRASHES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "crashes")


def replays():
    for name in sorted(os.listdir(CRASHES)):
        kind = name.rsplit("-", 1)[0] if name.rsplit("-", 1)[-1].isdigit() else name
        marks = [pytest.mark.xfail(reason=KNOWN[kind], strict=False)] if kind in KNOWN else []
        yield pytest.param(name, id=name, marks=marks)


@pytest.fixture(scope="module")
def world():
    w = smbfuzz_world.World()
    with smbfuzz_world.bounded_files():
        yield w
    w.close()


@pytest.mark.parametrize("name", list(replays()))
def test_replay(world, name):
    with open(os.path.join(CRASHES, name), "rb") as f:
        data = f.read()
    smbfuzz_world.run_input(world, data, atheris.FuzzedDataProvider, tolerate=frozenset())
