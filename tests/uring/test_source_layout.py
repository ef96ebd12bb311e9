"""The C files of the engine and of the event library are layered: no two of them call each
other in a circle.

Each file is compiled on its own and `nm` says which symbols it defines and which it needs;
a file "calls into" the file that defines what it needs. The graph must have no cycle (see
docs/ENGINE.md, "Source layout", and docs/EVENTS.md), so a change that makes a lower layer
call a higher one fails here rather than silently tangling the code again. An event backend
is reached from the core only through its struct event_backend (a table of pointers).
"""
import functools
import os
import shutil
import subprocess
import sysconfig
import tempfile
from pathlib import Path

import pytest

SOURCES = Path(__file__).resolve().parents[2] / "src" / "smbring"
ENGINE = SOURCES / "_uring"     # its headers are the event library's too (uring_api.h)

pytestmark = pytest.mark.skipif(not (shutil.which("gcc") and shutil.which("nm")),
                                reason="needs gcc and nm")


def symbols(source: Path, out: Path) -> tuple[set[str], set[str]]:
    """(defined, undefined) external symbols of one C file."""
    # the AddressSanitizer run preloads libasan into the test process: not into the compiler
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    subprocess.run(["gcc", "-std=gnu11", "-O0", "-c", str(source), "-o", str(out),
                    "-I", sysconfig.get_paths()["include"], "-I", str(ENGINE)],
                   check=True, env=env)
    defined, needed = set(), set()
    for line in subprocess.run(["nm", str(out)], capture_output=True, text=True, env=env,
                               check=True).stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] in "TDBRC":
            defined.add(parts[2])
        elif len(parts) == 2 and parts[0] == "U":
            needed.add(parts[1])
    return defined, needed


@functools.cache
def call_graph(folder: str) -> dict[str, set[str]]:
    """file -> the files it calls into, for the C files of src/smbring/<folder>."""
    defined, needed = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for source in sorted((SOURCES / folder).glob("*.c")):
            defined[source.name], needed[source.name] = symbols(source, Path(tmp) / f"{source.stem}.o")
    owner = {sym: name for name, syms in defined.items() for sym in syms}
    return {name: {owner[s] for s in syms if s in owner and owner[s] != name}
            for name, syms in needed.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    on_path: list[str] = []
    finished: set[str] = set()

    def visit(node: str) -> list[str] | None:
        if node in on_path:
            return on_path[on_path.index(node):] + [node]
        if node in finished:
            return None
        on_path.append(node)
        for nxt in sorted(graph[node]):
            cycle = visit(nxt)
            if cycle:
                return cycle
        on_path.pop()
        finished.add(node)
        return None

    for node in sorted(graph):
        cycle = visit(node)
        if cycle:
            return cycle
    return None


@pytest.mark.parametrize("folder", ["_uring", "_events"])
def test_no_two_files_call_each_other_in_a_circle(folder):
    graph = call_graph(folder)
    cycle = find_cycle(graph)
    assert cycle is None, "the C files call each other in a circle: " + " -> ".join(cycle)
    assert len(graph) >= 8


def test_the_engine_s_bottom_layers_call_nothing_above_them():
    graph = call_graph("_uring")
    assert graph["base.c"] == set()
    assert graph["queue.c"] <= {"base.c"}
    assert "ops.c" not in graph["request.c"] and "register.c" not in graph["request.c"]


def test_find_cycle_sees_a_circle():
    assert find_cycle({"a.c": {"b.c"}, "b.c": {"c.c"}, "c.c": {"a.c"}}) == ["a.c", "b.c", "c.c", "a.c"]
    assert find_cycle({"a.c": {"b.c"}, "b.c": set()}) is None


def test_event_backends_call_only_the_core_s_declared_helpers():
    graph = call_graph("_events")
    for backend in ("backend_poll.c", "backend_epoll.c", "backend_uring.c"):
        assert graph[backend] <= {"event.c", "signals.c", "backend_epoll.c"}, backend
    assert graph["signals.c"] == set()
