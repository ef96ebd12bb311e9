"""What the fuzzer counts as a finding, and the findings already reported.

A check that fails raises `Finding`; its `kind` names a known finding (one in KNOWN), so
that the fuzzer can record it and go on: otherwise one bug, met again and again, would hide
every other. tests/fuzz/crashes holds a reproducer of each, replayed with no finding
tolerated by test_replay.py.
"""
from __future__ import annotations

import os

# Findings reported and not fixed yet, by kind: the fuzzer records them and goes on (so that
# one known bug does not hide the next); SMBRING_FUZZ_STRICT=1, and the replays of
# tests/fuzz/crashes, treat them as failures. Remove an entry once its bug is fixed.
KNOWN = {
    "second-negotiate-malformed": "a second NEGOTIATE that is signed, carries a flag the core refuses "
                                  "or a wrong StructureSize fails _one's generic checks first and is "
                                  "answered STATUS_INVALID_PARAMETER; the connection stays (h_negotiate, "
                                  "which drops it, is never reached)",
}
STRICT = "SMBRING_FUZZ_STRICT"


def tolerated() -> frozenset:
    return frozenset() if os.environ.get(STRICT) == "1" else frozenset(KNOWN)


class Finding(AssertionError):
    """An input broke one of the checks; `kind` names the known ones."""

    def __init__(self, message: str, kind: str = ""):
        super().__init__(f"[{kind}] {message}" if kind else message)
        self.kind = kind
