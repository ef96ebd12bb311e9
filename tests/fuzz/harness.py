"""Coverage-guided fuzzing of the SMB2 protocol core with atheris (libFuzzer for Python).

    .venv/bin/python tests/fuzz/harness.py [libFuzzer options] [corpus directories]

for instance, ten minutes from the committed seeds, new inputs kept in a scratch directory:

    .venv/bin/python tests/fuzz/harness.py -max_total_time=600 -timeout=10 \\
        -rss_limit_mb=2048 /tmp/smb-corpus tests/fuzz/corpus

Each input is a script of frames for one fresh, logged-on connection (smbfuzz_input), run
and checked by smbfuzz_client, smbfuzz_shell and smbfuzz_world. The modules of smbring.smb,
and the path checks of smbring.vfs.api and smbring.vfs.posix, are instrumented so that
coverage of them guides the mutations. An input
that breaks a check raises, and libFuzzer saves it as crash-<sha1>; replay one with

    .venv/bin/python tests/fuzz/harness.py crash-<sha1>

or see what it sends and what each answer said with

    .venv/bin/python tests/fuzz/harness.py --show crash-<sha1>
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import types

import atheris

INSTRUMENTED = ("smbring.smb", "smbring.vfs.posix", "smbring.vfs.api")
WORLD_DIR = "SMBRING_FUZZ_DIR"     # where the worker keeps its shares (the parent removes it)


def on_path() -> None:
    """The fuzzer's modules, and tests/smbcore.py (effects carried out with system calls)."""
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:0] = [here, os.path.dirname(here)]


def instrument(prefixes=INSTRUMENTED) -> int:
    """Adds coverage instrumentation to every function and method defined in the modules
    named by `prefixes` (nested functions too: their code is patched with the outer one)."""
    count = 0
    for name, module in list(sys.modules.items()):
        if module is None or not any(name == p or name.startswith(p + ".") for p in prefixes):
            continue
        for obj in list(vars(module).values()):
            members = vars(obj).values() if isinstance(obj, type) and obj.__module__ == name else [obj]
            for member in members:
                func = getattr(member, "__func__", member)          # staticmethod, classmethod
                if isinstance(member, property):
                    func = member.fget
                if isinstance(func, types.FunctionType) and func.__module__ == name:
                    atheris.instrument_func(func)
                    count += 1
    return count


def worker(argv: list[str]) -> None:
    on_path()
    import smbfuzz_findings
    import smbfuzz_world                     # imports smbring.smb.* and smbring.vfs.posix
    count = instrument()
    print(f"INFO: instrumented {count} functions of {', '.join(INSTRUMENTED)}", file=sys.stderr)
    world = smbfuzz_world.World(os.environ.get(WORLD_DIR))
    tolerate = smbfuzz_findings.tolerated()

    def test_one_input(data: bytes) -> None:
        smbfuzz_world.run_input(world, data, atheris.FuzzedDataProvider, tolerate)

    # files are bounded by RLIMIT_FSIZE (EFBIG for the core to answer): libFuzzer must not
    # take SIGXFSZ for a crash; and -merge, -fork and -jobs run argv[0] again as a command
    argv = [f"{sys.executable} {os.path.abspath(__file__)}"] + argv[1:] + ["-handle_xfsz=0"]
    with smbfuzz_world.bounded_files():
        atheris.Setup(argv, test_one_input)
        atheris.Fuzz()


def show(paths: list[str]) -> int:
    """Triage: what each input sends and what every answer said (known findings are
    reported and passed over unless SMBRING_FUZZ_STRICT=1)."""
    on_path()
    import smbfuzz_findings
    import smbfuzz_input
    import smbfuzz_world
    world = smbfuzz_world.World()
    failed = 0
    try:
        with smbfuzz_world.bounded_files():
            for path in paths:
                with open(path, "rb") as f:
                    data = f.read()
                mode, script = smbfuzz_input.decode(atheris.FuzzedDataProvider(data))
                print(f"== {path}: mode {mode.kind}, WRITEs held {mode.held_writes}")
                for frame in ([script] if mode.raw else script):
                    print("  ", frame)
                seen = []
                try:
                    client = smbfuzz_world.run_input(world, data, atheris.FuzzedDataProvider,
                                                     smbfuzz_findings.tolerated(), seen=seen)
                    if client.known:
                        print("   known findings:", ", ".join(client.known))
                except Exception as e:      # a check, or the core's own exception
                    failed += 1
                    print(f"   FINDING: {type(e).__name__}: {e}")
                print("   answers:", " ".join(f"{c}:{s:x}" for c, s in seen))
    finally:
        world.close()
    return 1 if failed else 0


def main() -> int:
    """Fuzzes in a child process and removes its shares afterwards: libFuzzer ends the process
    with exit(), which skips Python's clean-up."""
    if sys.argv[1:2] == ["--show"]:
        return show(sys.argv[2:])
    if os.environ.get(WORLD_DIR):
        worker(sys.argv)
        return 0
    on_path()
    from smbfuzz_world import scratch_dir
    scratch = tempfile.mkdtemp(prefix="smbring-fuzz-", dir=scratch_dir())
    try:
        env = dict(os.environ, **{WORLD_DIR: scratch})
        child = subprocess.Popen([sys.executable, os.path.abspath(__file__), *sys.argv[1:]], env=env)
        try:
            return child.wait()
        except KeyboardInterrupt:
            return child.wait()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
