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
import subprocess
import sys

import make_corpus

HERE = os.path.dirname(os.path.abspath(__file__))
MUTATIONS = 1200        # inputs after the seeds (some 25 s on one core, the seeds as long)
TIME_LIMIT = 240        # seconds: only a backstop against a fuzzer that stops making progress


def test_fuzz_briefly(tmp_path):
    new_inputs = tmp_path / "corpus"
    new_inputs.mkdir()
    runs = len(os.listdir(make_corpus.CORPUS)) + MUTATIONS     # libFuzzer counts the seeds' runs
    cmd = [sys.executable, os.path.join(HERE, "harness.py"), "-seed=1", f"-runs={runs}",
           f"-max_total_time={TIME_LIMIT}", "-timeout=10", "-rss_limit_mb=2048", "-max_len=4096",
           "-print_final_stats=1", f"-artifact_prefix={tmp_path}/", str(new_inputs), make_corpus.CORPUS]
    env = dict(os.environ)
    env.pop("SMBRING_FUZZ_STRICT", None)
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=TIME_LIMIT + 60, env=env)
    found = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(("crash-", "timeout-", "oom-", "leak-")))
    tail = "\n".join(run.stderr.splitlines()[-40:])
    assert run.returncode == 0 and not found, f"the fuzzer found {found} (exit {run.returncode}):\n{tail}"
    done = re.search(r"^Done (\d+) runs", run.stderr, re.M)
    assert done and int(done.group(1)) >= runs, f"not every run made (of {runs}):\n{tail}"


def test_seed_corpus_is_what_make_corpus_writes():
    """The committed seeds can be regenerated (make_corpus.py) and are not stale."""
    for name, data in make_corpus.seeds().items():
        with open(os.path.join(make_corpus.CORPUS, f"seed-{name}"), "rb") as f:
            assert f.read() == data, f"seed-{name} is stale: run tests/fuzz/make_corpus.py"
