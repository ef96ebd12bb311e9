"""The fuzzer, briefly, as CI runs it: a fixed seed, at most 60 s, from the committed corpus.

It fails if the harness finds an input that breaks a check (an exception escaping
handle_frame, a bad response frame, a file outside the shares touched or shown, a leak, a
hang past 10 s, memory past the limits). Known findings, reported and not yet fixed
(smbfuzz_findings.KNOWN), are passed over; tests/fuzz/test_replay.py replays them.
"""
import os
import subprocess
import sys

import make_corpus

HERE = os.path.dirname(os.path.abspath(__file__))
SECONDS = 60


def test_fuzz_briefly(tmp_path):
    new_inputs = tmp_path / "corpus"
    new_inputs.mkdir()
    cmd = [sys.executable, os.path.join(HERE, "harness.py"), "-seed=1", "-runs=30000",
           f"-max_total_time={SECONDS}", "-timeout=10", "-rss_limit_mb=2048", "-max_len=4096",
           "-print_final_stats=1", f"-artifact_prefix={tmp_path}/", str(new_inputs), make_corpus.CORPUS]
    env = dict(os.environ)
    env.pop("SMBRING_FUZZ_STRICT", None)
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=SECONDS + 60, env=env)
    found = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(("crash-", "timeout-", "oom-", "leak-")))
    tail = "\n".join(run.stderr.splitlines()[-40:])
    assert run.returncode == 0 and not found, f"the fuzzer found {found} (exit {run.returncode}):\n{tail}"
    assert "Done" in run.stderr, tail


def test_seed_corpus_is_what_make_corpus_writes():
    """The committed seeds can be regenerated (make_corpus.py) and are not stale."""
    for name, data in make_corpus.seeds().items():
        with open(os.path.join(make_corpus.CORPUS, f"seed-{name}"), "rb") as f:
            assert f.read() == data, f"seed-{name} is stale: run tests/fuzz/make_corpus.py"
