"""``smbring bench NAME``: each benchmark is a module ``smbring.bench.NAME`` exposing
``add_arguments(parser)`` and ``run(args) -> int``."""
from __future__ import annotations

import importlib

BENCHMARKS = {
    "ops": "raw engine ops: 4 KiB/1 MiB reads via ring, pread and a thread pool; NOP round trips",
    "events": "event loops: tevent's pipe workloads on our backends and tevent's own",
    "smbclient": "smbclient get/put against smbring and Samba's smbd",
    "smallops": "small requests (smbtorture echo, create+close; listing; 4 KiB copies) against smbd",
    "identity": "acting as each user: thread credential switches against io_uring personalities",
    "client": "SMB clients (smbring's, 1 and N channels; smbclient; smbprotocol) get/put "
              "against smbring and Samba's smbd",
}


def register(sub) -> None:
    p = sub.add_parser("bench", help="run a benchmark")
    bsub = p.add_subparsers(dest="bench", metavar="NAME")
    bsub.required = True
    for name, text in BENCHMARKS.items():
        bp = bsub.add_parser(name, help=text)
        bp.add_argument("--json", action="store_true", help="print machine-readable results")
        bp.set_defaults(func=_runner(name), _bench_parser=bp)
        try:
            importlib.import_module(f"smbring.bench.{name}").add_arguments(bp)
        except ModuleNotFoundError:
            pass


def _runner(name):
    def run(args):
        return importlib.import_module(f"smbring.bench.{name}").run(args)
    return run
