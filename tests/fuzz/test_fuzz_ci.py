"""The fuzzer, briefly, as CI runs it: every committed seed once, then MUTATIONS inputs made
from them, with a fixed seed. A fixed seed and a fixed number of runs (not a time limit)
make CI's inputs the same on every run and machine, however loaded: a failure here comes
back on a rerun. (Long runs are `make fuzz`, docs/FUZZING.md.)

It fails if the harness finds an input that breaks a check (an exception escaping
handle_frame, a bad response frame, a file outside the shares touched or shown, a leak, a
hang past 10 s, memory past the limits). Known findings, reported and not yet fixed
(smbfuzz_findings.KNOWN), are passed over; tests/fuzz/test_replay.py replays them.
"""
import os
import re
import resource
import subprocess
import sys

import make_corpus

HERE = os.path.dirname(os.path.abspath(__file__))
MUTATIONS = 1200        # inputs after the seeds (some 25 s on one core, the seeds as long)
TIME_LIMIT = 240        # seconds: only a backstop against a fuzzer that stops making progress


def fuzz_briefly(tmp_path, harness: str, corpus: str, mutations: int, *options: str) -> None:
    """`harness` run on the seeds in `corpus` and `mutations` inputs made from them, with a
    fixed seed (new inputs kept in tmp_path, never in the committed corpus): fails on any
    finding, or where not every run was made."""
    new_inputs = tmp_path / "corpus"
    new_inputs.mkdir()
    runs = len(os.listdir(corpus)) + mutations      # libFuzzer counts the seeds' runs
    # the fuzzer's peak RSS, which its limit is checked against, starts from this process's:
    # Linux carries a process's peak across fork and exec (a test worker grown to 2.2 GB made
    # the fuzzer report that before its first input). So 2 GB above it, and 2 GB at most in
    # any one allocation.
    inherited_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    cmd = [sys.executable, os.path.join(HERE, harness), "-seed=1", f"-runs={runs}",
           f"-max_total_time={TIME_LIMIT}", "-timeout=10", f"-rss_limit_mb={2048 + inherited_mb}",
           "-malloc_limit_mb=2048", *options,
           "-print_final_stats=1", f"-artifact_prefix={tmp_path}/", str(new_inputs), corpus]
    env = dict(os.environ)
    env.pop("SMBRING_FUZZ_STRICT", None)
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=TIME_LIMIT + 60, env=env)
    found = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(("crash-", "timeout-", "oom-", "leak-")))
    tail = "\n".join(run.stderr.splitlines()[-40:])
    assert run.returncode == 0 and not found, f"{harness} found {found} (exit {run.returncode}):\n{tail}"
    done = re.search(r"^Done (\d+) runs", run.stderr, re.M)
    assert done and int(done.group(1)) >= runs, f"not every run made (of {runs}):\n{tail}"


def test_fuzz_briefly(tmp_path):
    fuzz_briefly(tmp_path, "harness.py", make_corpus.CORPUS, MUTATIONS, "-max_len=4096")


def test_seed_corpus_is_what_make_corpus_writes():
    """The committed seeds can be regenerated (make_corpus.py) and are not stale."""
    for name, data in make_corpus.seeds().items():
        with open(os.path.join(make_corpus.CORPUS, f"seed-{name}"), "rb") as f:
            assert f.read() == data, f"seed-{name} is stale: run tests/fuzz/make_corpus.py"


RPC_MUTATIONS = 50_000      # the RPC fuzzer's inputs after its seeds (some 10 s on one core)


def test_rpc_fuzz_briefly(tmp_path):
    """The named pipes' DCE/RPC fuzzer (rpc_harness.py), as the SMB2 one above: its seeds (what
    rpcclient and impacket send), then RPC_MUTATIONS inputs, with a fixed seed."""
    fuzz_briefly(tmp_path, "rpc_harness.py", os.path.join(HERE, "rpc_corpus"), RPC_MUTATIONS, "-max_len=8192")


def test_rpc_seeds_reach_every_operation():
    """Every operation of every interface is called by some seed and answered (a RESPONSE,
    or the FAULT of a caller who may not call it): the seeds are not stale."""
    import struct

    import rpc_harness
    from smbring.smb.rpc import lsarpc, srvsvc, wkssvc
    called = set()
    corpus = os.path.join(HERE, "rpc_corpus")
    for name in os.listdir(corpus):
        with open(os.path.join(corpus, name), "rb") as f:
            data = f.read()
        answers = rpc_harness.run_input(data)
        assert answers[:1] == ["BIND_ACK"] and len(answers) >= 2, (name, answers)
        interface = rpc_harness.INTERFACES[data[0] & 3]
        for chunk, _limit in rpc_harness.writes(data):
            if len(chunk) >= 24 and chunk[2] == 0:      # a REQUEST: its opnum
                called.add((interface, struct.unpack_from("<H", chunk, 22)[0]))
    for module in (srvsvc, wkssvc, lsarpc):
        missing = {op for op in module.INTERFACE.operations if (module.INTERFACE.pipe, op) not in called}
        assert not missing, f"{module.INTERFACE.pipe}: no seed calls opnum {sorted(missing)}"


def test_the_rpc_checks_refuse_what_a_pipe_must_not_answer():
    """rpc_harness's checks can fail: a PDU longer than a pipe's fragment, one of a type a
    server never sends, and bytes that are no whole PDU are each a Finding."""
    import struct

    import pytest
    import rpc_harness

    def pdu(ptype: int, length: int) -> bytes:
        return struct.pack("<BBBB4sHHI", 5, 0, ptype, 3, b"\x10\0\0\0", length, 0, 1) + bytes(length - 16)
    assert rpc_harness.check_stream(pdu(2, 100) + pdu(3, 32)) == ["RESPONSE", "FAULT"]
    for bad in (pdu(2, 4281 + 16), pdu(0, 100), pdu(2, 100)[:-1], pdu(2, 100) + b"\x05\0"):
        with pytest.raises(rpc_harness.Finding):
            rpc_harness.check_stream(bad)
